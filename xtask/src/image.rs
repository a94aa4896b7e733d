//! `cargo xtask image`: the container image's runtime stage (deploy/container/Containerfile),
//! built with buildah from a static binary built here, for machines that cannot pull the
//! builder stage's base image. The runtime stage's text is taken from the Containerfile itself
//! (entrypoint, labels, port), only its `COPY --from=builder` is pointed at the local binary.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, run_cmd};

/// The static target: the runtime stage is `FROM scratch`, no libc in it.
pub const MUSL: &str = "x86_64-unknown-linux-musl";
const CONTAINERFILE: &str = "deploy/container/Containerfile";
const BUILDER_COPY: &str = "COPY --from=builder /out/ /";
/// Where the runtime stage expects the binary.
const BINARY_IN_IMAGE: &str = "usr/local/bin/brokerscope";

pub struct ImageArgs {
    pub tag: String,
    /// A binary to use instead of building one (must be static).
    pub binary: Option<PathBuf>,
    /// A private buildah store (vfs driver), e.g. for tests; else buildah's default store.
    pub root: Option<PathBuf>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The runtime stage: from the last `FROM scratch` to the end, with the builder's output
/// replaced by the context's `out/`.
pub fn runtime_stage(containerfile: &str) -> Result<String> {
    let start = containerfile
        .rfind("\nFROM scratch")
        .context("deploy/container/Containerfile has no `FROM scratch` runtime stage")?;
    let stage = &containerfile[start + 1..];
    if !stage.contains(BUILDER_COPY) {
        bail!(
            "the runtime stage of {CONTAINERFILE} no longer has `{BUILDER_COPY}`; update xtask/src/image.rs"
        );
    }
    Ok(stage.replace(BUILDER_COPY, "COPY out/ /"))
}

fn buildah(root: Option<&Path>) -> Command {
    let mut cmd = Command::new("buildah");
    if let Some(root) = root {
        cmd.arg("--root")
            .arg(root.join("storage"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args(["--storage-driver", "vfs"]);
    }
    cmd
}

pub fn run(args: &ImageArgs) -> Result<()> {
    let ws = workspace();
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            let installed = Command::new("rustup")
                .args(["target", "list", "--installed"])
                .output()
                .context("rustup not found")?;
            if !String::from_utf8_lossy(&installed.stdout)
                .lines()
                .any(|l| l == MUSL)
            {
                run_cmd(Command::new("rustup").args(["target", "add", MUSL]))?;
            }
            run_cmd(
                cargo()
                    .current_dir(&ws)
                    .args(["build", "--release", "-p", "observer", "--target", MUSL])
                    // ring (TLS to the Kubernetes API) compiles C and assembly: Debian's musl-tools
                    // names its compiler musl-gcc, not the x86_64-linux-musl-gcc cc-rs looks for.
                    .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
                    // Symbols stay in host builds (profiles); the image ships without them.
                    .env("CARGO_PROFILE_RELEASE_STRIP", "symbols"),
            )
            .context("building the static release binary")?;
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| ws.join("target"));
            target_dir.join(MUSL).join("release/brokerscope")
        }
    };
    let containerfile = fs::read_to_string(ws.join(CONTAINERFILE))
        .with_context(|| format!("reading {CONTAINERFILE}"))?;
    let stage = runtime_stage(&containerfile)?;

    let context = std::env::temp_dir().join(format!("brokerscope-image-{}", std::process::id()));
    let _ = fs::remove_dir_all(&context);
    let in_image = context.join("out").join(BINARY_IN_IMAGE);
    fs::create_dir_all(in_image.parent().unwrap())?;
    fs::copy(&binary, &in_image)
        .with_context(|| format!("copying {} (build it first)", binary.display()))?;
    fs::write(context.join("Containerfile"), stage)?;
    let built = run_cmd(
        buildah(args.root.as_deref())
            .args(["build", "--isolation", "chroot", "--layers=false", "-f"])
            .arg(context.join("Containerfile"))
            .args(["-t", &args.tag])
            .arg(&context),
    )
    .context("buildah build (install buildah: apt-get install buildah; cargo xtask setup does)");
    let _ = fs::remove_dir_all(&context);
    built?;
    println!("[image] built {} from {}", args.tag, binary.display());
    Ok(())
}
