// Builds the C++ helper against the same libtorch headers as torch-sys and records libtorch's
// library folder as the run-time search path, so `cargo run` / `cargo test` need no environment.
use std::path::PathBuf;

fn main() {
    let libtorch = PathBuf::from(std::env::var("LIBTORCH").expect(
        "LIBTORCH is not set: run scripts/setup.sh, which fills .libtorch/ (set in .cargo/config.toml)",
    ));
    let include = libtorch.join("include");
    // The NVRTC kernels' source, as a C++ raw string literal helper.cpp includes.
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels = std::fs::read_to_string("csrc/kernels.cu").expect("csrc/kernels.cu");
    assert!(
        !kernels.contains(")CUDA\""),
        "csrc/kernels.cu must not contain the raw-string terminator )CUDA\""
    );
    std::fs::write(
        out.join("kernels.cu.inc"),
        format!("R\"CUDA({kernels})CUDA\"\n"),
    )
    .expect("writing kernels.cu.inc");
    cc::Build::new()
        .cpp(true)
        .file("csrc/helper.cpp")
        .file("csrc/dist.cpp")
        .include(&out)
        .include("csrc/gloo_decl")
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
    println!("cargo:rerun-if-changed=csrc/kernels.cu");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-changed=csrc/gloo_decl");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath,{}",
        libtorch.join("lib").display()
    );
}
