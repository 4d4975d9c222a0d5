// Builds the C++ helper against the same libtorch headers as torch-sys and records libtorch's
// library folder as the run-time search path, so `cargo run` / `cargo test` need no environment.
use std::path::PathBuf;

fn main() {
    let libtorch = PathBuf::from(std::env::var("LIBTORCH").expect(
        "LIBTORCH is not set: run scripts/setup.sh, which fills .libtorch/ (set in .cargo/config.toml)",
    ));
    let include = libtorch.join("include");
    cc::Build::new()
        .cpp(true)
        .file("csrc/helper.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("wanlora_helper");
    // dlopen for the driver and NVRTC (the fused kernels).
    println!("cargo:rustc-link-lib=dl");
    println!("cargo:rerun-if-changed=csrc/helper.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath,{}",
        libtorch.join("lib").display()
    );
}
