//! Writes the BareMetalHost and HardwareData CRDs generated from `controller-api`'s types.
//!
//! The output is committed (`controller/deploy/crds/`); `tests/crd.rs` fails when it drifts
//! from the types, so run this after changing them.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Generate metal3's BareMetalHost and HardwareData CRDs from Ferrox's Rust types.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory to write the CRD YAML files into.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds"))]
    out_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    for generated in controller_api::crds() {
        let path = args.out_dir.join(generated.file_name);
        let yaml = controller_api::render_yaml(&generated.crd)?;
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
