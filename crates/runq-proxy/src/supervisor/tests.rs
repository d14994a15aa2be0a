//! The supervisor's phases, driven input by input.

use runq_shared::protocol::StreamKind;

use super::*;

fn supervisor(has_disks: bool) -> Supervisor {
    Supervisor::new(has_disks, true)
}

fn guest(message: Message) -> Input {
    Input::Guest(message)
}

/// A supervisor whose QEMU connected to the channel.
fn connected(has_disks: bool) -> Supervisor {
    let mut supervisor = supervisor(has_disks);
    supervisor.handle(Input::ChannelConnected);
    supervisor
}

/// A supervisor whose guest connected, said hello and started the application.
fn running() -> Supervisor {
    let mut supervisor = connected(false);
    supervisor.handle(guest(Message::Hello {
        version: PROTOCOL_VERSION,
    }));
    supervisor.handle(guest(Message::Started {
        session: MAIN_SESSION,
    }));
    supervisor
}

fn data(session: u32, stream: StreamKind, text: &str) -> Message {
    Message::Data {
        session,
        stream,
        bytes: text.as_bytes().to_vec(),
    }
}

fn exec(session: u32) -> Input {
    Input::ExecRequest {
        session,
        json: b"{}".to_vec(),
    }
}

/// The violation the actions end the container with.
fn violation(actions: &[Action]) -> &str {
    match actions {
        [Action::End(Err(Failure::Violation(what)))] => what,
        other => panic!("no violation: {other:?}"),
    }
}

#[test]
fn booting_hello_gets_the_config_once_and_a_wrong_version_ends_the_container() {
    let mut supervisor = supervisor(false);
    assert_eq!(supervisor.deadline(), Some(Deadline::Boot));
    let hello = || {
        guest(Message::Hello {
            version: PROTOCOL_VERSION,
        })
    };
    assert_eq!(supervisor.handle(hello()), [Action::SendConfig]);
    assert_eq!(violation(&supervisor.handle(hello())), "a second Hello");

    let mut old = self::supervisor(false);
    assert_eq!(
        old.handle(guest(Message::Hello { version: 0 })),
        [Action::End(Err(Failure::ProtocolMismatch { guest: 0 }))]
    );
}

#[test]
fn booting_signals_go_to_the_main_session_which_holds_them() {
    let mut supervisor = supervisor(false);
    assert_eq!(
        supervisor.handle(Input::Signal(libc::SIGTERM)),
        [Action::SignalMain(libc::SIGTERM)]
    );
    assert_eq!(
        supervisor.handle(Input::WindowChanged),
        [Action::ResizeMain]
    );
    assert_eq!(
        supervisor.handle(Input::DeadlinePassed),
        [Action::End(Err(Failure::BootTimeout))]
    );
}

#[test]
fn booting_exec_requests_wait_with_what_their_clients_sent_and_start_with_the_application() {
    let mut supervisor = supervisor(false);
    assert_eq!(supervisor.handle(exec(1)), []);
    let stdin = data(0, StreamKind::Stdin, "early");
    let client = Input::ExecClient {
        session: 1,
        message: stdin,
    };
    assert_eq!(supervisor.handle(client), []);
    // A client may not speak for the guest: dropped when the session starts.
    let forged = Input::ExecClient {
        session: 1,
        message: Message::Exit {
            session: 0,
            code: 0,
        },
    };
    assert_eq!(supervisor.handle(forged), []);
    let started = supervisor.handle(guest(Message::Started {
        session: MAIN_SESSION,
    }));
    assert_eq!(
        started,
        [
            Action::StartMainSession,
            Action::ToGuest(Message::Exec {
                session: 1,
                json: b"{}".to_vec()
            }),
            Action::ToGuest(data(1, StreamKind::Stdin, "early")),
        ]
    );
    assert_eq!(supervisor.deadline(), None);
    let again = supervisor.handle(guest(Message::Started {
        session: MAIN_SESSION,
    }));
    assert_eq!(violation(&again), "a second Started");
}

#[test]
fn a_client_gone_before_its_session_started_leaves_nothing_to_start() {
    let mut supervisor = supervisor(false);
    supervisor.handle(exec(1));
    supervisor.handle(Input::ExecClientGone {
        session: 1,
        undelivered: None,
    });
    assert_eq!(
        supervisor.handle(guest(Message::Started {
            session: MAIN_SESSION
        })),
        [Action::StartMainSession]
    );
    assert_eq!(supervisor.finish(), []);
}

#[test]
fn running_the_application_s_stdio_goes_to_its_session_and_signals_to_the_guest_through_it() {
    let mut supervisor = running();
    let output = data(MAIN_SESSION, StreamKind::Stdout, "hi");
    assert_eq!(
        supervisor.handle(guest(output.clone())),
        [Action::ToMainSession(output)]
    );
    assert_eq!(
        supervisor.handle(Input::Signal(libc::SIGINT)),
        [Action::SignalMain(libc::SIGINT)]
    );
    let dns = guest(Message::DnsQuery {
        id: 7,
        packet: vec![1],
    });
    assert_eq!(
        supervisor.handle(dns),
        [Action::ResolveDns {
            id: 7,
            packet: vec![1]
        }]
    );
    let listening = Message::Listening { ports: vec![] };
    assert_eq!(
        supervisor.handle(guest(listening.clone())),
        [Action::ToMirror(listening)]
    );
    let forged = guest(Message::Signal {
        session: MAIN_SESSION,
        signal: 9,
    });
    assert!(violation(&supervisor.handle(forged)).starts_with("a message the guest may not"));
}

#[test]
fn running_exec_sessions_are_routed_both_ways_and_end_with_their_exit() {
    let mut supervisor = running();
    assert_eq!(
        supervisor.handle(exec(2)),
        [Action::ToGuest(Message::Exec {
            session: 2,
            json: b"{}".to_vec()
        })]
    );
    let resize = Input::ExecClient {
        session: 2,
        message: Message::Resize {
            session: 0,
            rows: 24,
            cols: 80,
        },
    };
    assert_eq!(
        supervisor.handle(resize),
        [Action::ToGuest(Message::Resize {
            session: 2,
            rows: 24,
            cols: 80
        })]
    );
    let output = data(2, StreamKind::Stderr, "x");
    assert_eq!(
        supervisor.handle(guest(output.clone())),
        [Action::ToClient(2, output)]
    );
    let exit = Message::Exit {
        session: 2,
        code: 3,
    };
    assert_eq!(
        supervisor.handle(guest(exit.clone())),
        [Action::ToClient(2, exit)]
    );
    // The session is over: late output only returns its credit.
    assert_eq!(
        supervisor.handle(guest(data(2, StreamKind::Stdout, "late"))),
        [Action::ToGuest(Message::Credit {
            session: 2,
            stream: StreamKind::Stdout,
            bytes: 4
        })]
    );
    assert_eq!(supervisor.finish(), []);
}

#[test]
fn running_a_gone_client_s_process_is_killed_and_its_undelivered_output_credited() {
    let mut supervisor = running();
    supervisor.handle(exec(3));
    let gone = Input::ExecClientGone {
        session: 3,
        undelivered: Some(data(3, StreamKind::Stdout, "lost")),
    };
    assert_eq!(
        supervisor.handle(gone),
        [
            Action::ToGuest(Message::Signal {
                session: 3,
                signal: libc::SIGKILL
            }),
            Action::ToGuest(Message::Credit {
                session: 3,
                stream: StreamKind::Stdout,
                bytes: 4
            }),
        ]
    );
    // The reader's own report of the same hang-up kills nothing twice.
    let again = Input::ExecClientGone {
        session: 3,
        undelivered: None,
    };
    assert_eq!(supervisor.handle(again), []);
}

#[test]
fn exited_without_disks_qemu_goes_at_once_and_the_guest_s_code_is_the_container_s() {
    let mut supervisor = running();
    supervisor.handle(exec(4));
    let exit = guest(Message::Exit {
        session: MAIN_SESSION,
        code: 42,
    });
    assert_eq!(supervisor.handle(exit), [Action::KillQemu]);
    assert_eq!(supervisor.deadline(), Some(Deadline::PowerOff));
    assert_eq!(supervisor.handle(Input::Signal(libc::SIGTERM)), []);
    assert_eq!(
        supervisor.handle(exec(5)),
        [Action::ToClient(
            5,
            Message::Error {
                session: 5,
                message: "the container is not running".into()
            }
        )]
    );
    assert_eq!(
        supervisor.handle(Input::VirtiofsdEnded("killed by SIGTERM".into())),
        []
    );
    assert_eq!(
        supervisor.handle(Input::QemuEnded("killed by SIGKILL".into())),
        [Action::End(Ok(42))]
    );
    assert_eq!(
        supervisor.finish(),
        [Action::ToClient(
            4,
            Message::Exit {
                session: 4,
                code: EXIT_KILLED_WITH_CONTAINER
            }
        )]
    );
}

#[test]
fn exited_with_disks_qemu_ends_by_itself_or_by_the_power_off_deadline() {
    let mut supervisor = supervisor(true);
    supervisor.handle(guest(Message::Started {
        session: MAIN_SESSION,
    }));
    let exit = guest(Message::Exit {
        session: MAIN_SESSION,
        code: 0,
    });
    assert_eq!(supervisor.handle(exit), []);
    assert_eq!(
        supervisor.handle(Input::DeadlinePassed),
        [Action::End(Ok(0))]
    );
}

#[test]
fn failed_the_guest_s_reason_is_reported_after_the_output_and_the_container_exits_1() {
    let mut supervisor = supervisor(false);
    supervisor.handle(exec(6));
    let error = guest(Message::Error {
        session: MAIN_SESSION,
        message: "no such file".into(),
    });
    assert_eq!(
        supervisor.handle(error),
        [
            Action::FinishOutput,
            Action::Report("guest: no such file".into())
        ]
    );
    assert_eq!(
        supervisor.handle(Input::QemuEnded("exit status 0".into())),
        [Action::End(Ok(1))]
    );
    let told = supervisor.finish();
    assert!(
        matches!(&told[..], [Action::ToClient(6, Message::Error { .. })]),
        "{told:?}"
    );
}

#[test]
fn channel_lost_signals_stop_and_qemu_s_end_or_the_deadline_is_an_error() {
    let mut supervisor = running();
    assert_eq!(
        supervisor.handle(Input::ChannelClosed(Some("reset".into()))),
        [Action::Report("reset".into())]
    );
    assert_eq!(supervisor.handle(Input::Signal(libc::SIGTERM)), []);
    assert_eq!(supervisor.handle(Input::WindowChanged), []);
    assert_eq!(
        supervisor.handle(Input::DeadlinePassed),
        [Action::End(Err(Failure::ChannelLost))]
    );
    let mut supervisor = running();
    supervisor.handle(Input::ChannelClosed(None));
    assert_eq!(
        supervisor.handle(Input::QemuEnded("exit status 1".into())),
        [Action::End(Err(Failure::QemuEnded("exit status 1".into())))]
    );
}

#[test]
fn running_qemu_or_virtiofsd_ending_under_the_application_is_an_error_once_the_channel_is_read() {
    let mut supervisor = running();
    assert_eq!(
        supervisor.handle(Input::QemuEnded("killed by SIGSEGV".into())),
        []
    );
    assert_eq!(supervisor.deadline(), Some(Deadline::Drain));
    // Nothing more reaches the guest.
    assert_eq!(supervisor.handle(Input::Signal(libc::SIGTERM)), []);
    assert_eq!(supervisor.handle(Input::WindowChanged), []);
    assert!(matches!(
        &supervisor.handle(exec(3))[..],
        [Action::ToClient(3, Message::Error { .. })]
    ));
    assert_eq!(
        supervisor.handle(Input::ChannelClosed(None)),
        [Action::End(Err(Failure::QemuEnded(
            "killed by SIGSEGV".into()
        )))]
    );

    // A virtiofsd that failed is no consequence of QEMU's end: it ends the container at once
    // (and the loop stops QEMU).
    let mut supervisor = running();
    assert_eq!(
        supervisor.handle(Input::VirtiofsdEnded("exit status 1".into())),
        [Action::End(Err(Failure::VirtiofsdEnded(
            "exit status 1".into()
        )))]
    );

    // A channel that never closes is given up at the drain deadline, booting or running; a
    // read error after the machine went is no news.
    for mut supervisor in [running(), connected(false)] {
        supervisor.handle(Input::QemuEnded("exit status 0".into()));
        assert_eq!(
            supervisor.handle(Input::DeadlinePassed),
            [Action::End(Err(Failure::QemuEnded("exit status 0".into())))]
        );
    }
    let mut supervisor = running();
    supervisor.handle(Input::QemuEnded("killed by SIGKILL".into()));
    assert_eq!(
        supervisor.handle(Input::ChannelClosed(Some("reset".into()))),
        [Action::End(Err(Failure::QemuEnded(
            "killed by SIGKILL".into()
        )))]
    );

    // A virtiofsd that exited 0 lost its client: QEMU's end is named.
    let mut supervisor = running();
    assert_eq!(
        supervisor.handle(Input::VirtiofsdEnded("exit status 0".into())),
        []
    );
    assert_eq!(
        supervisor.handle(Input::QemuEnded("exit status 1".into())),
        []
    );
    assert_eq!(
        supervisor.handle(Input::ChannelClosed(None)),
        [Action::End(Err(Failure::QemuEnded("exit status 1".into())))]
    );

    // Also where the channel's end is seen before QEMU's.
    let mut supervisor = running();
    supervisor.handle(Input::VirtiofsdEnded("exit status 0".into()));
    assert_eq!(supervisor.handle(Input::ChannelClosed(None)), []);
    assert_eq!(
        supervisor.handle(Input::QemuEnded("exit status 1".into())),
        [Action::End(Err(Failure::QemuEnded("exit status 1".into())))]
    );
    // QEMU that does not end is given up at the drain deadline, naming virtiofsd.
    let mut supervisor = running();
    supervisor.handle(Input::VirtiofsdEnded("exit status 0".into()));
    supervisor.handle(Input::ChannelClosed(None));
    assert_eq!(supervisor.deadline(), Some(Deadline::Drain));
    assert_eq!(
        supervisor.handle(Input::DeadlinePassed),
        [Action::End(Err(Failure::VirtiofsdEnded(
            "exit status 0".into()
        )))]
    );

    // Before QEMU connected there is nothing to read.
    let mut booting = Supervisor::new(false, true);
    assert_eq!(
        booting.handle(Input::QemuEnded("exit status 1".into())),
        [Action::End(Err(Failure::QemuEnded("exit status 1".into())))]
    );
    let mut booting = Supervisor::new(false, true);
    assert_eq!(
        booting.handle(Input::VirtiofsdEnded("exit status 1".into())),
        [Action::End(Err(Failure::VirtiofsdEnded(
            "exit status 1".into()
        )))]
    );

    // A guest that exits twice broke the protocol.
    let mut supervisor = running();
    let exit = |code| {
        guest(Message::Exit {
            session: MAIN_SESSION,
            code,
        })
    };
    supervisor.handle(exit(5));
    assert!(violation(&supervisor.handle(exit(6))).contains("after the application's end"));
}

/// The guest reports the application's end and powers off at once: virtiofsd (whose client
/// went) or QEMU may be seen to end before the channel's reader passed the report on.
#[test]
fn the_guest_s_last_words_count_when_its_machine_is_seen_to_end_first() {
    let exit = |code| {
        guest(Message::Exit {
            session: MAIN_SESSION,
            code,
        })
    };
    // virtiofsd first, which exits 0 when QEMU went: the exit still read is the container's.
    let mut supervisor = running();
    assert_eq!(
        supervisor.handle(Input::VirtiofsdEnded("exit status 0".into())),
        []
    );
    let output = guest(data(MAIN_SESSION, StreamKind::Stdout, "last line"));
    assert!(matches!(
        &supervisor.handle(output)[..],
        [Action::ToMainSession(Message::Data { .. })]
    ));
    assert_eq!(supervisor.handle(exit(3)), [Action::KillQemu]);
    assert_eq!(
        supervisor.handle(Input::QemuEnded("killed by SIGKILL".into())),
        [Action::End(Ok(3))]
    );

    // QEMU first: the exit read afterwards ends the container.
    let mut supervisor = running();
    assert_eq!(
        supervisor.handle(Input::QemuEnded("exit status 0".into())),
        []
    );
    assert_eq!(
        supervisor.handle(Input::VirtiofsdEnded("exit status 0".into())),
        []
    );
    assert_eq!(supervisor.handle(exit(0)), [Action::End(Ok(0))]);

    // virtiofsd, then QEMU, then the exit.
    let mut supervisor = running();
    supervisor.handle(Input::VirtiofsdEnded("exit status 0".into()));
    supervisor.handle(Input::QemuEnded("exit status 0".into()));
    assert_eq!(supervisor.handle(exit(7)), [Action::End(Ok(7))]);

    // The guest's error, while the application was still starting.
    let mut booting = connected(false);
    booting.handle(guest(Message::Hello {
        version: PROTOCOL_VERSION,
    }));
    assert_eq!(booting.handle(Input::QemuEnded("exit status 0".into())), []);
    let error = guest(Message::Error {
        session: MAIN_SESSION,
        message: "exec: no such file".into(),
    });
    assert_eq!(
        booting.handle(error),
        [
            Action::FinishOutput,
            Action::Report("guest: exec: no such file".into()),
            Action::End(Ok(1))
        ]
    );

    // With disks QEMU is not killed: its own end flushes them.
    let mut with_disks = connected(true);
    with_disks.handle(guest(Message::Started {
        session: MAIN_SESSION,
    }));
    assert_eq!(
        with_disks.handle(Input::VirtiofsdEnded("exit status 0".into())),
        []
    );
    assert_eq!(with_disks.handle(exit(0)), []);
    assert_eq!(
        with_disks.handle(Input::QemuEnded("exit status 0".into())),
        [Action::End(Ok(0))]
    );
}

#[test]
fn violations_a_dns_query_without_the_embedded_server_or_a_session_never_started() {
    let mut no_dns = Supervisor::new(false, false);
    let query = guest(Message::DnsQuery {
        id: 1,
        packet: vec![0],
    });
    assert!(violation(&no_dns.handle(query)).contains("no embedded DNS"));

    let mut supervisor = running();
    supervisor.handle(exec(1));
    let invented = guest(data(9, StreamKind::Stdout, "x"));
    assert!(violation(&supervisor.handle(invented)).contains("exec session 9"));
    let stdin_from_the_guest = guest(data(1, StreamKind::Stdin, "x"));
    assert!(violation(&supervisor.handle(stdin_from_the_guest)).contains("may not send"));
}

#[test]
fn violations_exec_output_beyond_the_window_and_the_client_s_credit_reopens_it() {
    let mut supervisor = running();
    supervisor.handle(exec(1));
    let chunk = |len: usize| {
        guest(Message::Data {
            session: 1,
            stream: StreamKind::Stdout,
            bytes: vec![b'x'; len],
        })
    };
    let window = STREAM_WINDOW as usize;
    assert!(matches!(
        &supervisor.handle(chunk(window))[..],
        [Action::ToClient(1, _)]
    ));
    let credit = Input::ExecClient {
        session: 1,
        message: Message::Credit {
            session: 0,
            stream: StreamKind::Stdout,
            bytes: 10,
        },
    };
    assert!(matches!(
        &supervisor.handle(credit)[..],
        [Action::ToGuest(Message::Credit { bytes: 10, .. })]
    ));
    assert!(matches!(
        &supervisor.handle(chunk(10))[..],
        [Action::ToClient(1, _)]
    ));
    assert!(violation(&supervisor.handle(chunk(1))).contains("beyond its window"));
}

#[test]
fn violations_reported_by_the_loop_end_the_container() {
    let mut supervisor = running();
    let actions = supervisor.handle(Input::Violation("the application sent too much".into()));
    assert_eq!(violation(&actions), "the application sent too much");
}
