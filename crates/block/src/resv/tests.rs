//! Reservation state and keeper, command by command.

use super::*;

const A: HostId = [1; 16];
const B: HostId = [2; 16];

#[test]
fn register_acquire_release_and_access() {
    // Base 1.4 sections 8.8.2-8.8.4 and the access table of figure 403.
    let mut r = Reservations::default();
    assert_eq!(
        r.acquire(A, 0, 1, 0, 1),
        Err(conflict()),
        "acquire needs a registration"
    );
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    r.register(B, 2, 0, false, 0, 0xb).unwrap();
    assert_eq!(r.generation(), 2);
    // Registering again with another key conflicts; with the same key succeeds.
    assert_eq!(r.register(A, 1, 0, false, 0, 0xc), Err(conflict()));
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    // A wrong current key is refused.
    assert_eq!(r.acquire(A, 0, 0xb, 0, 1), Err(conflict()));
    r.acquire(A, 0, 0xa, 0, ResvType::WriteExclusive as u8)
        .unwrap();
    assert_eq!(r.acquire(B, 0, 0xb, 0, 1), Err(conflict()));
    // Write Exclusive: everyone reads, only the holder writes.
    r.check_io(&B, false).unwrap();
    assert_eq!(r.check_io(&B, true), Err(conflict()));
    r.check_io(&A, true).unwrap();
    // Release with the wrong type is an invalid field; the right type releases.
    assert_eq!(r.release(A, 0, 0xa, 2), Err(invalid("RTYPE")));
    r.release(A, 0, 0xa, 1).unwrap();
    r.check_io(&B, true).unwrap();
}

#[test]
fn exclusive_access_registrants_only() {
    let mut r = Reservations::default();
    let c: HostId = [3; 16];
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    r.register(B, 2, 0, false, 0, 0xb).unwrap();
    r.acquire(A, 0, 0xa, 0, ResvType::ExclusiveAccessRegOnly as u8)
        .unwrap();
    r.check_io(&B, false).unwrap();
    r.check_io(&B, true).unwrap();
    assert_eq!(r.check_io(&c, false), Err(conflict()));
}

#[test]
fn preempt_takes_over_and_removes_the_preempted() {
    // Section 8.8.4.2: preempting the holder's key moves the reservation and unregisters it.
    let mut r = Reservations::default();
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    r.register(B, 2, 0, false, 0, 0xb).unwrap();
    r.acquire(A, 0, 0xa, 0, ResvType::ExclusiveAccess as u8)
        .unwrap();
    r.acquire(B, 1, 0xb, 0xa, ResvType::ExclusiveAccess as u8)
        .unwrap();
    assert_eq!(r.check_io(&A, false), Err(conflict()));
    r.check_io(&B, true).unwrap();
    assert_eq!(r.registrants().len(), 1, "A was unregistered");
    assert!(r.holds(&B));
    assert_eq!(r.reservation(), Some(ResvType::ExclusiveAccess));
}

#[test]
fn unregistering_the_holder_releases_and_clear_wipes() {
    let mut r = Reservations::default();
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    r.acquire(A, 0, 0xa, 0, 1).unwrap();
    r.register(A, 1, 1, false, 0xa, 0).unwrap();
    assert_eq!(r.reservation(), None);
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    r.register(B, 2, 0, false, 0, 0xb).unwrap();
    r.acquire(B, 0, 0xb, 0, ResvType::WriteExclusiveAllReg as u8)
        .unwrap();
    // All-registrants: every registrant holds it.
    r.check_io(&A, true).unwrap();
    r.release(A, 1, 0xa, 0).unwrap();
    assert_eq!(r.reservation(), None);
    assert!(r.registrants().is_empty() && !r.is_active());
}

#[test]
fn replace_key_and_ignore_existing_key() {
    let mut r = Reservations::default();
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    assert_eq!(r.register(A, 1, 2, false, 0xdead, 0xc), Err(conflict()));
    r.register(A, 1, 2, true, 0xdead, 0xc).unwrap();
    r.acquire(A, 0, 0xc, 0, 1).unwrap();
    assert_eq!(r.register(A, 1, 7, false, 0, 0), Err(invalid("RREGA")));
}

#[test]
fn encoding_round_trips_and_rejects_bad_bytes() {
    let mut r = Reservations::default();
    assert_eq!(Reservations::decode(&r.encode()), Ok(r.clone()));
    r.register(A, 7, 0, false, 0, 0xa).unwrap();
    r.register(B, 9, 0, false, 0, 0xb).unwrap();
    r.acquire(A, 0, 0xa, 0, ResvType::WriteExclusiveRegOnly as u8)
        .unwrap();
    let b = r.encode();
    assert_eq!(Reservations::decode(&b), Ok(r.clone()));
    for n in 0..b.len() {
        assert!(Reservations::decode(&b[..n]).is_err(), "cut at {n}");
    }
    let mut bad = b.clone();
    bad[5] = 9; // no such type
    assert!(Reservations::decode(&bad).is_err());
    let mut bad = b.clone();
    bad[0] = 2;
    assert!(Reservations::decode(&bad).is_err());
    let mut twice = b.clone();
    twice[24 + 26..24 + 26 + 16].copy_from_slice(&A);
    assert!(Reservations::decode(&twice).is_err(), "A registered twice");
}

struct Saved(parking_lot::Mutex<Vec<Reservations>>, AtomicBool);

impl ResvStore for Saved {
    fn save(&self, state: &Reservations) -> IoFuture<()> {
        if self.1.load(Ordering::Relaxed) {
            return futures::future::ready(Err(BlockError::Unavailable("fenced".into()))).boxed();
        }
        self.0.lock().push(state.clone());
        futures::future::ready(Ok(())).boxed()
    }
}

#[test]
fn a_keeper_saves_each_change_before_it_takes_effect() {
    use crate::MemBlockDevice;
    use alcubierre_types::BlockSize;
    let saved = Arc::new(Saved(Default::default(), AtomicBool::new(false)));
    let keeper = Keeper::new(Reservations::default(), Some(saved.clone()));
    let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(1)).unwrap();
    let dev = Reserved::new(MemBlockDevice::new(g), keeper.clone());
    let write = || Op::Write {
        lba: Lba(0),
        data: Bytes::from(vec![1u8; 512]),
    };
    let run = |f: IoFuture<Reservations>| futures::executor::block_on(f);
    let reg = |key| ResvCommand::Register {
        action: 0,
        ignore_key: false,
        current: 0,
        new: key,
    };
    run(dev.reserve(A, 1, reg(0xa))).unwrap();
    run(dev.reserve(B, 2, reg(0xb))).unwrap();
    let acq = ResvCommand::Acquire {
        action: 0,
        current: 0xa,
        preempt: 0,
        rtype: ResvType::WriteExclusive as u8,
    };
    let after = run(dev.reserve(A, 1, acq)).unwrap();
    assert!(after.holds(&A));
    assert_eq!(saved.0.lock().len(), 3, "every change was saved");
    assert_eq!(saved.0.lock().last(), Some(&after));
    // Report and a repeated acquire change nothing: nothing more is saved.
    run(dev.reserve(A, 1, ResvCommand::Report)).unwrap();
    run(dev.reserve(A, 1, acq)).unwrap();
    assert_eq!(saved.0.lock().len(), 3);
    // B may read but not write; A writes.
    let b_write = futures::executor::block_on(dev.submit(&B, write()));
    assert_eq!(b_write, Err(BlockError::ReservationConflict));
    futures::executor::block_on(dev.submit(
        &B,
        Op::Read {
            lba: Lba(0),
            count: BlockCount(1),
        },
    ))
    .unwrap();
    futures::executor::block_on(dev.submit(&A, write())).unwrap();
    // A change the store refuses does not take effect.
    saved.1.store(true, Ordering::Relaxed);
    let preempt = ResvCommand::Acquire {
        action: 1,
        current: 0xb,
        preempt: 0xa,
        rtype: ResvType::WriteExclusive as u8,
    };
    assert!(matches!(
        run(dev.reserve(B, 2, preempt)),
        Err(BlockError::Unavailable(_))
    ));
    assert!(
        keeper.state().holds(&A),
        "the refused preempt changed nothing"
    );
    saved.1.store(false, Ordering::Relaxed);
    run(dev.reserve(B, 2, preempt)).unwrap();
    assert!(keeper.state().holds(&B));
    let a_write = futures::executor::block_on(dev.submit(&A, write()));
    assert_eq!(a_write, Err(BlockError::ReservationConflict));
}

#[test]
fn fencing_removes_a_hosts_registrations_and_releases_what_it_held() {
    let c: HostId = [3; 16];
    let mut r = Reservations::default();
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    r.register(B, 2, 0, false, 0, 0xb).unwrap();
    r.register(c, 3, 0, false, 0, 0xc).unwrap();
    r.acquire(A, 0, 0xa, 0, ResvType::WriteExclusive as u8)
        .unwrap();
    let g = r.generation();
    // Nothing of a host that is not registered: nothing changes.
    assert_eq!(r.remove_hosts(|h| h == &[9; 16]), 0);
    assert_eq!(r.generation(), g);
    // The holder fenced: its registration goes and its reservation with it.
    assert_eq!(r.remove_hosts(|h| h == &A), 1);
    assert_eq!(r.generation(), g + 1);
    assert_eq!(r.reservation(), None);
    assert_eq!(r.registrants().len(), 2);
    r.check_io(&B, true).unwrap();
    // Another host takes the reservation without preempting anyone.
    r.acquire(B, 0, 0xb, 0, ResvType::WriteExclusive as u8)
        .unwrap();
    // Fencing a registrant that does not hold it leaves the reservation.
    assert_eq!(r.remove_hosts(|h| h == &c), 1);
    assert!(r.holds(&B));
}

#[test]
fn fencing_the_last_all_registrants_holder_ends_the_reservation() {
    let mut r = Reservations::default();
    r.register(A, 1, 0, false, 0, 0xa).unwrap();
    r.register(B, 2, 0, false, 0, 0xb).unwrap();
    r.acquire(A, 0, 0xa, 0, ResvType::WriteExclusiveAllReg as u8)
        .unwrap();
    assert_eq!(r.remove_hosts(|h| h == &A), 1);
    assert!(r.holds(&B), "all registrants hold it: B still does");
    assert_eq!(r.remove_hosts(|h| h == &B), 1);
    assert_eq!(r.reservation(), None);
    assert!(!r.is_active());
}

#[test]
fn a_keepers_fence_is_saved_before_it_takes_effect() {
    struct Refuse;
    impl ResvStore for Refuse {
        fn save(&self, _: &Reservations) -> IoFuture<()> {
            Box::pin(async { Err(BlockError::Unavailable("no longer the primary".into())) })
        }
    }
    let mut st = Reservations::default();
    st.register(A, 1, 0, false, 0, 0xa).unwrap();
    let k = Keeper::new(st.clone(), Some(Arc::new(Refuse)));
    assert!(futures::executor::block_on(k.fence(|h| h == &A)).is_err());
    assert_eq!(
        k.state(),
        st,
        "a fence that could not be saved changes nothing"
    );
    let k = Keeper::new(st, None);
    assert_eq!(
        futures::executor::block_on(k.fence(|h| h == &A)).unwrap(),
        1
    );
    assert!(!k.state().is_active());
}
