// The binary finds libtorch's CPU libraries through its run path (.libtorch/lib); on the GPU
// machine LD_LIBRARY_PATH points at PyTorch's own torch/lib first, and CUDA is dlopen'ed there.
fn main() {
    let libtorch = std::env::var("LIBTORCH")
        .expect("LIBTORCH is not set: run scripts/setup.sh (see .cargo/config.toml)");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
}
