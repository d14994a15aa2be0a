# Shared helpers for the runq asset scripts. Sourced, not executed.

log() { printf 'runq-assets: %s\n' "$*" >&2; }
die() { printf 'runq-assets: error: %s\n' "$*" >&2; exit 1; }

# need CMD... : fail early, naming the missing tool, instead of half-way through.
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found in PATH"
	done
}

# make_tmpdir: set $TMPD to a scratch dir removed when the script exits.
# Call it directly (not in $(...)), so the trap lands in the script's shell.
make_tmpdir() {
	TMPD=$(mktemp -d "${TMPDIR:-/tmp}/runq-assets.XXXXXX")
	trap 'rm -rf "$TMPD"' EXIT
}
