//! Embeds the web console's and the demo page's static files
//! (`assets/admin/`, `assets/demo/`): writes `$OUT_DIR/assets.rs`, one
//! `(name, bytes)` table per directory, so every file there is compiled
//! into the binary and none can be forgotten. No network, no tool.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut code = String::new();
    for (table, dir) in [("ADMIN", "assets/admin"), ("DEMO", "assets/demo")] {
        let dir = Path::new(&manifest).join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable directory entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        writeln!(code, "pub(crate) static {table}: &[(&str, &[u8])] = &[").unwrap();
        for path in files {
            println!("cargo:rerun-if-changed={}", path.display());
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("asset file names are UTF-8");
            writeln!(
                code,
                "    ({name:?}, include_bytes!({:?})),",
                path.display().to_string()
            )
            .unwrap();
        }
        writeln!(code, "];").unwrap();
    }
    std::fs::write(Path::new(&out).join("assets.rs"), code).expect("OUT_DIR is writable");
}
