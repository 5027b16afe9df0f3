//! The engine against a model (a byte vector per volume): random writes of any alignment,
//! zeroes, reads, destage rounds, reopens and backend outages, in a tiny cache so that the log
//! wraps, clean data is evicted and partial blocks meet every path.

mod common;

use std::sync::Arc;

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_cache::{Engine, Op};
use alcubierre_io::{Medium, MemMedium};
use alcubierre_types::{BlockCount, Lba, VolumeId};
use bytes::Bytes;
use common::{geometry, make_room, open, pattern, small_format, vol};
use proptest::prelude::*;

const VOL_SECTORS: u64 = 1024; // 512 KiB volumes of 512-byte blocks
const MEDIUM: usize = 2 << 20; // 2 MiB cache: ~2 laps of the log per run

#[derive(Debug, Clone)]
enum Action {
    Write { v: usize, lba: u64, n: u64 },
    Zero { v: usize, lba: u64, n: u64 },
    Read { v: usize, lba: u64, n: u64 },
    Destage { budget: u64 },
    Reopen,
    Outage(bool),
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..VOL_SECTORS).prop_flat_map(|lba| (Just(lba), 1..=(VOL_SECTORS - lba).min(80)))
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (0..2usize, range()).prop_map(|(v, (lba, n))| Action::Write { v, lba, n }),
        2 => (0..2usize, range()).prop_map(|(v, (lba, n))| Action::Zero { v, lba, n }),
        6 => (0..2usize, range()).prop_map(|(v, (lba, n))| Action::Read { v, lba, n }),
        2 => (1u64..200_000).prop_map(|budget| Action::Destage { budget }),
        1 => Just(Action::Reopen),
        1 => any::<bool>().prop_map(Action::Outage),
    ]
}

fn run(actions: Vec<Action>, partitions: u32) -> Result<(), TestCaseError> {
    let medium = Arc::new(MemMedium::new(MEDIUM));
    Engine::format(&*medium, &small_format(partitions)).unwrap();
    let backend = Arc::new(MemBackend::new());
    let vols: Vec<(VolumeId, _)> = (0..2)
        .map(|i| (vol(i), geometry(VOL_SECTORS * 512)))
        .collect();
    for (v, g) in &vols {
        backend.create(*v, g.size()).unwrap();
    }
    let mut model = vec![vec![0u8; (VOL_SECTORS * 512) as usize]; 2];
    let mut e = open(medium.clone() as Arc<dyn Medium>, backend.clone(), &vols);
    let mut down = false;
    for (id, a) in actions.into_iter().enumerate() {
        match a {
            Action::Write { v, lba, n } => {
                let mut data = vec![0u8; (n * 512) as usize];
                for (i, s) in data.chunks_mut(512).enumerate() {
                    pattern(id as u64, lba + i as u64, s);
                }
                let op = e
                    .write_op(vols[v].0, Lba(lba), Bytes::from(data.clone()))
                    .unwrap();
                if !down {
                    make_room(&e, &op);
                }
                if down && would_block(&e, &op) {
                    continue;
                }
                e.submit(op).unwrap();
                model[v][(lba * 512) as usize..((lba + n) * 512) as usize].copy_from_slice(&data);
            }
            Action::Zero { v, lba, n } => {
                let op = e.zero_op(vols[v].0, Lba(lba), BlockCount(n)).unwrap();
                if !down {
                    make_room(&e, &op);
                }
                if down && would_block(&e, &op) {
                    continue;
                }
                match e.submit(op) {
                    Ok(()) => model[v][(lba * 512) as usize..((lba + n) * 512) as usize].fill(0),
                    // A partial-block zero may need the backend's copy of the block: only
                    // allowed to fail while the backend is down.
                    Err(err) => prop_assert!(down, "zero failed with backend up: {err}"),
                }
            }
            Action::Read { v, lba, n } => match e.read(vols[v].0, Lba(lba), BlockCount(n)) {
                Ok(got) => {
                    let want = &model[v][(lba * 512) as usize..((lba + n) * 512) as usize];
                    prop_assert!(
                        got[..] == want[..],
                        "read {v}:{lba}+{n} differs at action {id}"
                    );
                }
                Err(err) => prop_assert!(down, "read failed with backend up: {err}"),
            },
            Action::Destage { budget } => {
                let r = e.partitions()[0].destage_round(&*backend, budget);
                prop_assert!(r.is_ok() || down, "destage failed with backend up");
            }
            Action::Reopen => {
                drop(e);
                e = open(medium.clone() as Arc<dyn Medium>, backend.clone(), &vols);
            }
            Action::Outage(d) => {
                down = d;
                backend.set_available(!d);
            }
        }
    }
    backend.set_available(true);
    e.destage_all().unwrap();
    prop_assert_eq!(e.stats().dirty_bytes, 0);
    for (i, (v, _)) in vols.iter().enumerate() {
        prop_assert!(
            backend.contents(*v).unwrap() == model[i],
            "backend of volume {i} differs after destage"
        );
        for lba in (0..VOL_SECTORS).step_by(64) {
            let got = e.read(*v, Lba(lba), BlockCount(64)).unwrap();
            prop_assert!(got[..] == model[i][(lba * 512) as usize..((lba + 64) * 512) as usize]);
        }
    }
    Ok(())
}

/// While the backend is down the test cannot destage, so it skips ops that would have to wait.
fn would_block(e: &Engine, op: &Op) -> bool {
    let p = e.partition_of(op.volume());
    let max = u64::from(e.superblock().max_batch_data_blocks) + 1;
    p.dirty_blocks() + 2 * max > e.superblock().partitions[0].blocks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn engine_matches_model(actions in proptest::collection::vec(action(), 1..400)) {
        run(actions, 1)?;
    }

    #[test]
    fn engine_matches_model_two_partitions(actions in proptest::collection::vec(action(), 1..300)) {
        run(actions, 2)?;
    }
}
