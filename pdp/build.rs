// The default bundle is embedded from ../policies (include_dir); rebuild when it changes.
fn main() {
    println!("cargo:rerun-if-changed=../policies");
}
