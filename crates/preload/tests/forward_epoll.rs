//! The client-side epoll table (`forward::epoll::Table`): capacity,
//! edge-triggered / one-shot bookkeeping, keys of removed members, closes.

use virtuos::forward::epoll::{key, Table};

const ET: u32 = libc::EPOLLET as u32;
const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
const IN: u32 = libc::EPOLLIN as u32;
const EEXIST: i64 = -(libc::EEXIST as i64);
const ENOENT: i64 = -(libc::ENOENT as i64);
const ENOSPC: i64 = -(libc::ENOSPC as i64);

#[test]
fn sets_have_a_fixed_capacity_and_numbers_are_reused_cleanly() {
    let mut t: Box<Table<3, 4>> = Box::default();
    assert_eq!(t.used(), 0);
    assert_eq!(t.find(5), None);
    for fd in [5, 6, 7] {
        assert!(t.open(fd, true).is_some());
    }
    assert!(t.open(8, true).is_none(), "table full");
    assert_eq!(t.used(), 3);
    // A set whose number comes back (epoll_create after an unseen close)
    // replaces the stale one and hands back its domain descriptor.
    let i = t.find(6).unwrap();
    t.set(i).remote = 42;
    t.set(i).domain = 2;
    t.set(i).add(10, 100, IN, 1).unwrap();
    let (j, stale) = t.open(6, true).unwrap();
    assert_eq!(stale, (42, 2));
    assert_eq!(t.set(j).remote, -1);
    assert!(t.set(j).is_empty());
    assert_eq!(t.used(), 3);
    assert_eq!(t.close(7).0, -1);
    assert_eq!(t.close(7).0, -1, "second close: nothing");
    assert_eq!(t.used(), 2);
    assert!(t.open(8, false).is_some());
    let s = t.get(8).unwrap();
    assert!(
        s.local_maybe(),
        "a set we did not see created may hold local members"
    );
    assert!(!t.get(5).unwrap().local_maybe());
    let mut r = [0i32; 3];
    let n = t.in_range(6, 8, &mut r);
    let mut got = r[..n].to_vec();
    got.sort();
    assert_eq!(got, vec![6, 8]);
}

#[test]
fn members_have_a_fixed_capacity_and_keys_name_one_registration() {
    let mut t: Box<Table<2, 4>> = Box::default();
    let (i, _) = t.open(3, true).unwrap();
    let s = t.set(i);
    let mut keys = vec![];
    for fd in 10..14 {
        keys.push(s.add(fd, fd as u32 + 100, IN, fd as u64 * 10).unwrap());
    }
    assert_eq!(s.add(20, 120, IN, 0), Err(ENOSPC));
    assert_eq!(s.add(10, 110, IN, 0), Err(EEXIST));
    assert_eq!(s.len(), 4);
    assert_eq!(s.armed(), 4);
    assert_eq!(s.deliver(keys[2]), Some(120));
    assert_eq!(
        s.deliver(keys[2]),
        Some(120),
        "level-triggered: stays armed"
    );
    // Removed, then added again under the same number: the old key is dead.
    let m = s.remove(12).unwrap();
    assert_eq!((m.fd, m.remote), (12, 112));
    assert_eq!(s.remove(12), Err(ENOENT));
    assert_eq!(s.deliver(keys[2]), None);
    let k2 = s.add(12, 200, IN, 7).unwrap();
    assert_ne!(k2, keys[2]);
    assert_eq!(k2 as u32, 12);
    assert_eq!(s.deliver(keys[2]), None, "stale generation");
    assert_eq!(s.deliver(k2), Some(7));
    assert_eq!(s.deliver(key(99, 1)), None, "unknown descriptor");
    // A refused ADD is undone by key only.
    s.remove_key(keys[0] ^ (1 << 40));
    assert!(s.member(10).is_some(), "wrong generation: kept");
    s.remove_key(keys[0]);
    assert!(s.member(10).is_none());
    assert_eq!(s.key_of(10), Err(ENOENT));
    assert_eq!(s.key_of(11), Ok(keys[1]));
}

#[test]
fn oneshot_members_disarm_until_modified_and_edge_triggered_ones_do_not() {
    let mut t: Box<Table<1, 8>> = Box::default();
    let (i, _) = t.open(4, true).unwrap();
    let s = t.set(i);
    let k_et = s.add(20, 1, IN | ET, 111).unwrap();
    let k_os = s.add(21, 2, IN | ONESHOT, 222).unwrap();
    let k_both = s.add(22, 3, IN | ET | ONESHOT, 333).unwrap();
    assert_eq!(s.armed(), 3);
    assert_eq!(s.deliver(k_et), Some(111));
    assert_eq!(s.armed(), 3, "edge-triggered members stay armed");
    assert_eq!(s.deliver(k_os), Some(222));
    assert_eq!(s.armed(), 2);
    assert!(!s.member(21).unwrap().armed);
    // An event taken by an interrupted wait may still arrive: delivered,
    // without disarming twice.
    assert_eq!(s.deliver(k_os), Some(222));
    assert_eq!(s.armed(), 2);
    assert_eq!(s.deliver(k_both), Some(333));
    assert_eq!(s.armed(), 1);
    // MOD re-arms, with the new data, under the same key.
    assert_eq!(s.key_of(21), Ok(k_os));
    s.modify(21, IN | ONESHOT, 999).unwrap();
    assert_eq!(s.armed(), 2);
    assert_eq!(s.deliver(k_os), Some(999));
    assert_eq!(s.armed(), 1);
    assert_eq!(s.modify(77, IN, 0), Err(ENOENT));
    // Removing a disarmed member does not touch the armed count.
    s.remove(22).unwrap();
    assert_eq!(s.armed(), 1);
    s.remove(20).unwrap();
    assert_eq!(s.armed(), 0);
}

#[test]
fn closing_a_descriptor_takes_it_out_of_every_set() {
    let mut t: Box<Table<4, 8>> = Box::default();
    for (epfd, remote) in [(3, 30), (4, 40), (5, -1)] {
        let (i, _) = t.open(epfd, true).unwrap();
        t.set(i).remote = remote;
        t.set(i).domain = if remote >= 0 { 2 } else { 0 };
    }
    for epfd in [3, 4, 5] {
        let i = t.find(epfd).unwrap();
        t.set(i).add(9, 90, IN, 1).unwrap();
        t.set(i).add(10, 100, IN, 2).unwrap();
    }
    let mut dels = [(0i32, 0u32); 4];
    let n = t.forget_fd(9, &mut dels);
    let mut d = dels[..n].to_vec();
    d.sort();
    assert_eq!(
        d,
        vec![(30, 90), (40, 90)],
        "DEL where a domain instance exists"
    );
    for epfd in [3, 4, 5] {
        assert!(t.get(epfd).unwrap().member(9).is_none());
        assert!(t.get(epfd).unwrap().member(10).is_some());
    }
    assert_eq!(t.forget_fd(9, &mut dels), 0, "already gone");
    // After a fork the instances may be shared: no DEL (the last close of
    // the file removes it, in the domain as natively), but out of the table.
    t.mark_shared();
    assert_eq!(t.forget_fd(10, &mut dels), 0);
    assert!(t.get(3).unwrap().member(10).is_none());
    // A child without a shadow of ours forgets every forwarded member.
    let i = t.find(4).unwrap();
    t.set(i).add(11, 110, IN, 3).unwrap();
    t.drop_remote(1);
    assert_eq!(
        t.get(4).unwrap().remote,
        40,
        "another domain's instance stays"
    );
    t.drop_remote(2);
    assert_eq!(t.get(4).unwrap().remote, -1);
    assert!(t.get(4).unwrap().is_empty());
    assert_eq!(t.get(4).unwrap().armed(), 0);
}
