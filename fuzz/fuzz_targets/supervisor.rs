//! The proxy's supervisor driven by arbitrary inputs: mostly guest frames, some client and
//! host events. It must never panic, and no frame from the guest may make it hold more.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runq_proxy::supervisor::{Action, Input, Supervisor};
use runq_shared::protocol::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut supervisor = Supervisor::new(b"{}".to_vec(), flags & 1 != 0, flags & 2 != 0);
    // Each step: a selector byte, a length byte, then that many bytes of a frame body.
    while let [selector, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let session = u32::from(*selector >> 4);
        let from_guest = *selector & 0x0f < 10;
        let input = if from_guest {
            match Message::decode(body) {
                Ok(message) => Input::Guest(message),
                Err(_) => continue,
            }
        } else {
            match *selector & 0x0f {
                10 => Input::ExecRequest {
                    session,
                    json: body.to_vec(),
                },
                11 => match Message::decode(body) {
                    Ok(message) => Input::ExecClient { session, message },
                    Err(_) => continue,
                },
                12 => Input::ExecClientGone {
                    session,
                    undelivered: Message::decode(body).ok(),
                },
                13 => Input::Signal(len as i32),
                14 => Input::DeadlinePassed,
                _ => Input::QemuEnded(String::new()),
            }
        };
        let held = supervisor.held();
        let actions = supervisor.handle(input);
        if from_guest {
            assert!(supervisor.held() <= held, "a guest frame grew the supervisor");
        }
        if actions.iter().any(|action| matches!(action, Action::End(_))) {
            break;
        }
    }
    let _ = supervisor.finish();
});
