//! Integration tests live in tests/; see common/ for the harness.
