//! Serves one memory-backed LUN over iSCSI, for trying initiators against the target:
//! `cargo run -p alcubierre-iscsi --example mem_target [ADDR] [MIB] [BLOCK]` (default
//! 127.0.0.1:3260, 1024 MiB, 512-byte blocks); the target name is printed.

use std::sync::Arc;

use alcubierre_block::{MemBlockDevice, Reserved};
use alcubierre_iscsi::login::Access;
use alcubierre_iscsi::scsi::Lun;
use alcubierre_iscsi::{volume_iqn, Export, Target};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry, VolumeId};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3260".into());
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let bs = match args.next().as_deref() {
        Some("4096") => BlockSize::B4096,
        _ => BlockSize::B512,
    };
    let geometry = VolumeGeometry::new(bs, ByteSize::mib(mib)).expect("geometry");
    let id = VolumeId::random();
    let target = Target::new();
    let name = volume_iqn(id);
    target.export(
        &name,
        Export {
            lun: Arc::new(Lun::new(
                Arc::new(Reserved::volatile(MemBlockDevice::new(geometry))),
                id.to_bytes(),
                1,
            )),
            access: Access::default(),
            portals: vec![],
        },
    );
    let (bound, task) =
        alcubierre_iscsi::driver::listen(target, addr.parse().expect("ADDR")).await?;
    println!("iscsi://{bound}/{name}/0");
    let _ = task.await;
    Ok(())
}
