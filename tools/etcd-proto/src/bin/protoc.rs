//! A `protoc` for build scripts, on protox (pure Rust): the arguments prost-build passes
//! (`--include_imports`, `--include_source_info`, `-o FILE`, `-I DIR`, the files) and
//! `--version`. `tools/protoc` runs it, and `.cargo/config.toml` points `PROTOC` there, so
//! dependencies that compile .proto files in their build scripts (the `etcd-client` crate the
//! tests use) need no protoc on the machine.

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut includes, mut files, mut output) = (Vec::new(), Vec::new(), None);
    let (mut imports, mut source_info) = (false, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" => {
                println!("libprotoc 3.21.12 (protox)");
                return;
            }
            "--include_imports" => imports = true,
            "--include_source_info" => source_info = true,
            "-o" => output = args.next(),
            "-I" => includes.extend(args.next()),
            other if other.starts_with("--descriptor_set_out=") => {
                output = Some(other["--descriptor_set_out=".len()..].to_string());
            }
            other if other.starts_with("-I") => includes.push(other[2..].to_string()),
            other if other.starts_with("--proto_path=") => {
                includes.push(other["--proto_path=".len()..].to_string());
            }
            other if other.starts_with('-') => {
                eprintln!("protoc (protox): unsupported option {other}");
                std::process::exit(2);
            }
            file => files.push(file.to_string()),
        }
    }
    if includes.is_empty() {
        includes.push(".".to_string());
    }
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("protoc (protox): {e}");
        std::process::exit(1);
    };
    let mut compiler = protox::Compiler::new(&includes).unwrap_or_else(|e| fail(&e));
    compiler.include_imports(imports);
    compiler.include_source_info(source_info);
    for file in &files {
        compiler.open_file(file).unwrap_or_else(|e| fail(&e));
    }
    if let Some(output) = output {
        std::fs::write(&output, compiler.encode_file_descriptor_set()).unwrap_or_else(|e| fail(&e));
    }
}
