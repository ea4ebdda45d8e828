//! Prints this machine's inventory (or a fixture tree's, given as the argument) and how long
//! inspection took: `cargo run -p agent-inspect --example inspect [DIR]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = match std::env::args().nth(1) {
        Some(dir) => agent_inspect::Root::at(dir),
        None => agent_inspect::Root::host(),
    };
    let start = std::time::Instant::now();
    let inv = agent_inspect::inspect(&root)?;
    let took = start.elapsed();
    println!("{}", serde_json::to_string_pretty(&inv)?);
    eprintln!("inspect took {took:?}");
    Ok(())
}
