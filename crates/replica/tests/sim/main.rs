//! Deterministic simulation of one volume's replication: three nodes running the real primary
//! and follower state machines, journals with the engine's power-loss model, a store with the
//! leader's rules and heartbeat leases, a backend with a fencing token, and a network whose
//! connections break, whose messages are delayed and whose nodes are partitioned, all from one
//! seed. Oracles: no read returns data older than an acknowledged write; after healing, every
//! acknowledged write is there and new writes complete; never two serving primaries.
//!
//! `SIM_SEEDS=N` runs more seeds; `SIM_SEED=N` replays one (with `SIM_TRACE=1` to print events).

mod model;
mod nodes;
mod world;

use model::*;
use world::Sim;

/// What a run did, to show the simulation exercises the protocol.
#[derive(Default, Debug)]
struct Totals {
    acks: u64,
    reads: u64,
    epochs: u64,
    failovers: u64,
    rebuilds: u64,
}

fn run(seed: u64, totals: &mut Totals) {
    eprintln!("seed {seed} (replay: SIM_SEED={seed} SIM_TRACE=1)");
    let mut s = Sim::new(seed);
    while s.step() {
        if s.now >= RUN && s.faults {
            // Heal everything and restart crashed nodes; then it must make progress.
            s.faults = false;
            s.cut.clear();
            s.cut_store.clear();
            for n in 0..N {
                if !s.nodes[n].up {
                    s.nodes[n].up = true;
                }
            }
        }
    }
    // Settled: one primary serves and has every acknowledged write.
    let n = (0..N)
        .find(|n| matches!(&s.nodes[*n].role, Role::P(p) if p.serving()))
        .unwrap_or_else(|| panic!("seed {seed}: no primary serves after healing: {:?}", s.m));
    for b in 0..BLOCKS {
        let v = s.nodes[n].journal.read(b, &s.backend);
        assert!(
            v >= s.client.acked[b as usize],
            "seed {seed}: block {b} lost acknowledged {} (has {v})",
            s.client.acked[b as usize]
        );
    }
    // Progress after healing: writes were acknowledged in the settle period.
    let acks_before = s.client.acks;
    assert!(acks_before > 0, "seed {seed}: nothing acknowledged");
    totals.acks += s.client.acks;
    totals.reads += s.client.reads;
    totals.epochs += s.m.epoch.0;
    totals.failovers += s.failovers;
    totals.rebuilds += s.rebuilds;
    // Progress: once healed, writes kept completing to the end.
    let Role::P(p) = &s.nodes[n].role else {
        unreachable!()
    };
    let state = p.describe();
    assert!(
        s.client.settle_acks > 1000 && s.now - s.client.last_ack < 1500,
        "seed {seed}: writes stalled after healing: {} acknowledged, the last at {} of {} ({:?}); primary n{n}: {state}",
        s.client.settle_acks,
        s.client.last_ack,
        s.now,
        s.m
    );
}

#[test]
fn replication_survives_crashes_and_partitions() {
    let mut totals = Totals::default();
    if let Ok(seed) = std::env::var("SIM_SEED") {
        run(seed.parse().unwrap(), &mut totals);
        println!("{totals:?}");
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for seed in 0..seeds {
        run(seed, &mut totals);
    }
    println!("{seeds} seeds: {totals:?}");
    // The faults must bite: primaries fail over and followers get rebuilt.
    assert!(totals.failovers >= seeds / 4, "{totals:?}");
    assert!(totals.rebuilds >= seeds / 4, "{totals:?}");
}
