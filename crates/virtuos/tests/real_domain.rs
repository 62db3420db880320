//! The daemon with the real domain server (`target/<profile>/virtuos-domain`,
//! built on demand).

mod common;

use common::*;
use std::time::Duration;
use virtuos_abi::call::{self, WaitPolicy};
use virtuos_abi::control::{ClientRequest, DaemonReply, STORAGE};
use virtuos_abi::mapping::Mapping;
use virtuos_abi::ops::OP_PING;
use virtuos_abi::region::StatePage;
use virtuos_abi::{ClientRegion, STATE_SIZE};

#[test]
fn real_domain_connects_registers_pings_and_stops() {
    let env = TestEnv::new(real_domain());
    env.up();
    let storage = env.storage();
    assert_eq!(storage["state"], "connected", "{storage}");
    let domain_pid = storage["pid"].as_u64().unwrap() as u32;

    let (reply, fds) = env.request(&ClientRequest::Register {
        domain: STORAGE.into(),
    });
    assert!(
        matches!(reply, DaemonReply::Registered { .. }),
        "{reply:?}\nlog:\n{}",
        env.log()
    );
    assert_eq!(fds.len(), 2);
    let region = ClientRegion::map(&fds[0]).unwrap();
    region.validate().unwrap();
    let state = StatePage::map(&fds[1], false).unwrap();
    assert!(Mapping::map(&fds[1], STATE_SIZE, true).is_err());
    assert!(state.get().is_valid());

    let e = region.entry(0).unwrap();
    e.fill(OP_PING, 1, std::process::id(), None, [0; 6]);
    let policy = WaitPolicy {
        deadline: Some(Duration::from_secs(10)),
        ..WaitPolicy::default()
    };
    let r = call::submit_and_wait(&region, state.get(), 0, policy);
    assert_eq!(
        r,
        Ok((0, 0)),
        "OP_PING through the real domain\nlog:\n{}",
        env.log()
    );

    env.ok(&["down"]);
    assert!(!env.socket().exists());
    wait_for("domain gone", Duration::from_secs(10), || {
        !pid_alive(domain_pid)
    });
}
