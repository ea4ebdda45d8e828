//! Links libblkid: dynamically from the system by default, statically from
//! `FERROX_BLKID_STATIC_DIR` (a directory holding `libblkid.a`) for the musl ramdisk build.
fn main() {
    println!("cargo:rerun-if-env-changed=FERROX_BLKID_STATIC_DIR");
    match std::env::var("FERROX_BLKID_STATIC_DIR") {
        Ok(dir) if !dir.is_empty() => {
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-lib=static=blkid");
        }
        _ => println!("cargo:rustc-link-lib=dylib=blkid"),
    }
}
