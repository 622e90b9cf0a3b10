// `sqlx::migrate!` embeds migrations/ at compile time; a new migration file changes no Rust
// source, so tell cargo to rebuild this crate when the directory changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
