//! The classic runq example end to end: a PostgreSQL server in a runq container with its data
//! on a runq ext4 disk, a second runq container linked to it running psql, and the data still
//! there after a restart. The image is built from Debian's packages
//! (examples/postgresql/build-image.sh), since no registry is reachable.

mod common;

use std::process::Command;

use common::docker::{build_image, docker, Name};

const IMAGE: &str = "runq-postgres:latest";

/// `psql` from a second runq container linked to the server, retried while the server starts.
fn psql(server: &Name, sql: &str) -> common::Outcome {
    let link = format!("{}:db", server.0);
    let script = format!(
        "for i in $(seq 120); do pg_isready -q -h db && break; sleep 1; done; \
         psql -h db -U postgres -At -c \"{sql}\""
    );
    let name = Name::new();
    docker(&[
        "run",
        "--rm",
        "--runtime",
        "runq",
        "--name",
        &name.0,
        "--link",
        &link,
        IMAGE,
        "sh",
        "-c",
        &script,
    ])
}

#[test]
fn postgresql_on_a_runq_disk_answers_a_linked_client_and_keeps_its_data() {
    build_image("examples/postgresql/build-image.sh", &[IMAGE]);
    let images = tempfile::Builder::new()
        .prefix("runq-pgdata-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let disk = images.path().join("pgdata.raw");
    std::fs::File::create(&disk)
        .and_then(|file| file.set_len(512 << 20))
        .unwrap();
    let mkfs = Command::new("mkfs.ext4").args(["-qF"]).arg(&disk).status();
    assert!(mkfs.is_ok_and(|s| s.success()), "mkfs.ext4");
    let volume = format!(
        "{}:/dev/runq/pgdata/writeback/ext4/var/lib/postgresql/data",
        disk.display()
    );

    let server = Name::new();
    let started = docker(&[
        "run",
        "-d",
        "--runtime",
        "runq",
        "--name",
        &server.0,
        "-e",
        "RUNQ_MEM=512",
        "-e",
        "RUNQ_CPU=2",
        "-v",
        &volume,
        IMAGE,
    ]);
    assert_eq!(started.code(), 0, "{started:?}");

    let answer = psql(&server, "select 42 as answer;");
    assert_eq!(answer.stdout_text(), "42\n", "{answer:?}");
    let created = psql(
        &server,
        "create table kept (v int); insert into kept values (4242);",
    );
    assert_eq!(created.code(), 0, "{created:?}");

    let restarted = docker(&["restart", &server.0]);
    assert_eq!(restarted.code(), 0, "{restarted:?}");
    let kept = psql(&server, "select v from kept;");
    assert_eq!(kept.stdout_text(), "4242\n", "{kept:?}");
    let logs = docker(&["logs", &server.0]).stdout_text();
    assert_eq!(
        logs.matches("made a new cluster").count(),
        1,
        "the restart reused the cluster: {logs}"
    );
}
