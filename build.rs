// `sqlx::migrate!` embeds the migrations at compile time; without this, a migration added to
// an existing folder would not trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
