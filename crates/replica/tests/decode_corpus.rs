//! Hostile input in the normal test run: the fuzz corpus (`fuzz/corpus/decode_replica`) through
//! the decoder and both state machines, which must not panic.

#[test]
fn corpus_replays_without_panics() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/decode_replica"
    );
    let mut n = 0;
    for f in std::fs::read_dir(dir).expect("the committed corpus") {
        let data = std::fs::read(f.unwrap().path()).unwrap();
        alcubierre_replica::harness::run(&data);
        n += 1;
    }
    assert!(n >= 20, "only {n} corpus files");
}
