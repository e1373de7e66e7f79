//! Compiles `proto/etcd/*.proto` with protox and writes the prost messages and tonic servers
//! to `src/etcd/proto/` (arguments: the proto directory and the output directory).

fn main() {
    let mut args = std::env::args().skip(1);
    let (protos, out) = match (args.next(), args.next()) {
        (Some(protos), Some(out)) => (protos, out),
        _ => {
            eprintln!("usage: etcd-proto PROTO_DIR OUT_DIR");
            std::process::exit(2);
        }
    };
    let files = ["rpc.proto", "kv.proto", "auth.proto"].map(|f| format!("{protos}/{f}"));
    let descriptors = protox::compile(&files, [&protos]).unwrap_or_else(|e| {
        eprintln!("etcd-proto: {e}");
        std::process::exit(1);
    });
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&out)
        .compile_fds(descriptors)
        .unwrap_or_else(|e| {
            eprintln!("etcd-proto: {e}");
            std::process::exit(1);
        });
}
