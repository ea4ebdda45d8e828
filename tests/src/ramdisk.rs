//! What the ramdisk boot tests share: where the workspace and the built kernel + ramdisk are,
//! and a stand-in for the controller that records the agent's hello.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The kernel and ramdisk: `FERROX_KERNEL`/`FERROX_INITRAMFS`, else the newest that
/// hack/build-initramfs.sh left in target/initramfs/. Panics saying how to build them.
pub fn artifacts() -> (PathBuf, PathBuf) {
    if let (Ok(k), Ok(i)) = (
        std::env::var("FERROX_KERNEL"),
        std::env::var("FERROX_INITRAMFS"),
    ) {
        return (k.into(), i.into());
    }
    let dir = workspace().join("target/initramfs");
    let find = |prefix: &str, suffix: &str| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n.starts_with(prefix) && n.ends_with(suffix)
            })
            .collect();
        v.sort();
        v.pop().unwrap_or_else(|| {
            panic!(
                "no {prefix}*{suffix} in {}: run hack/build-initramfs.sh (hack/test.sh does)",
                dir.display()
            )
        })
    };
    (find("vmlinuz-", ""), find("ferrox-", ".img"))
}

/// The controller stand-in, a Python script run as `python3 SCRIPT ADDR PORT OUT`: it writes the
/// body of `POST /v1/agent/hello` to OUT (atomically) and answers 204; other paths get 404.
pub const CONTROLLER_STAND_IN: &str = r#"
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        if self.path == '/v1/agent/hello':
            open(sys.argv[3] + '.tmp', 'wb').write(body)
            os.rename(sys.argv[3] + '.tmp', sys.argv[3])
            self.send_response(204)
        else:
            self.send_response(404)
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;
