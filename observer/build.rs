//! Builds the kernel programs (observer-ebpf) with aya-build and leaves the object in OUT_DIR,
//! where `capture::loader` embeds it.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let object = out_dir.join("observer");
    let ebpf = aya_build::Package {
        name: "observer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom("nightly"))?;
    // AYA_BUILD_SKIP=1 (fast checks of userspace only) produces no object: embed an empty one,
    // which the loader refuses with a clear message.
    if !object.exists() {
        std::fs::write(&object, [])?;
    }
    Ok(())
}
