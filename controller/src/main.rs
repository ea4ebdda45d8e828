//! `ferrox-controller`: not built yet. This stub exists so the workspace has the shape ARCHITECTURE.md
//! describes; it is tracked by its own issue and is not called done.
fn main() {
    eprintln!("ferrox-controller: not implemented yet (see the Ferrox issues)");
    std::process::exit(2);
}
