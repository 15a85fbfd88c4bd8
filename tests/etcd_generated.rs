//! vendor/etcd-client ships its prost/tonic code generated and committed
//! (src/generated/), so that building grayshift needs no protoc. This test
//! runs the code generation etcd-client's own build script ran, on the
//! vendored .proto files, and checks that the result is byte for byte the
//! committed code: a .proto file or a generated file edited alone fails here.
//!
//! After changing the .proto files or the generator's version, regenerate with
//! `GRAYSHIFT_REGENERATE_ETCD=1 cargo test --test etcd_generated` (see
//! vendor/etcd-client/GRAYSHIFT.md). The protoc used is the one inside the
//! protoc-bin-vendored crate: no system protoc is needed, not even here.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The .proto files etcd-client's build script compiled, in its order.
const PROTOS: [&str; 5] = [
    "proto/etcd/api/authpb/auth.proto",
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
    "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
];

/// Generated from the imported google.api and openapiv2 annotations, included
/// by no module of the crate, hence not committed.
const NOT_COMMITTED: [&str; 2] = ["google.api.rs", "grpc.gateway.protoc_gen_openapiv2.options.rs"];

fn vendored_crate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/etcd-client")
}

/// Writes into `out` what etcd-client 0.21.1's build.rs wrote into OUT_DIR:
/// same generator settings (client only: its `build-server` feature off).
fn generate(out: &Path) {
    let root = vendored_crate();
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored has a protoc for this platform");
    let well_known_types = protoc_bin_vendored::include_path().expect("protoc-bin-vendored's include directory");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    let protos: Vec<PathBuf> = PROTOS.iter().map(|proto| root.join(proto)).collect();
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(out)
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos, &[root.join("proto"), well_known_types])
        .expect("the vendored .proto files compile");
}

fn rust_files(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".rs"))
        .collect()
}

/// The first line where `committed` and `fresh` differ, for the failure message.
fn first_difference(committed: &str, fresh: &str) -> String {
    let mut committed_lines = committed.lines();
    let mut fresh_lines = fresh.lines();
    for number in 1.. {
        match (committed_lines.next(), fresh_lines.next()) {
            (None, None) => return "only in line endings".to_owned(),
            (a, b) if a == b => continue,
            (a, b) => return format!("line {number}: committed {a:?}, generated {b:?}"),
        }
    }
    unreachable!()
}

#[test]
fn committed_etcd_code_is_what_the_vendored_protos_generate() {
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    let committed_dir = vendored_crate().join("src/generated");

    let generated: BTreeSet<String> =
        rust_files(fresh.path()).into_iter().filter(|name| !NOT_COMMITTED.contains(&name.as_str())).collect();
    assert!(!generated.is_empty(), "the generator wrote no module");

    if std::env::var_os("GRAYSHIFT_REGENERATE_ETCD").is_some() {
        for stale in rust_files(&committed_dir) {
            fs::remove_file(committed_dir.join(stale)).unwrap();
        }
        for name in &generated {
            fs::copy(fresh.path().join(name), committed_dir.join(name)).unwrap();
        }
        eprintln!(
            "regenerated {} into {}",
            generated.iter().cloned().collect::<Vec<_>>().join(", "),
            committed_dir.display()
        );
        return;
    }

    let regenerate = "regenerate with `GRAYSHIFT_REGENERATE_ETCD=1 cargo test --test etcd_generated`";
    assert_eq!(
        rust_files(&committed_dir),
        generated,
        "the generated modules differ from the committed ones; {regenerate}"
    );
    for name in &generated {
        let committed = fs::read_to_string(committed_dir.join(name)).unwrap();
        let fresh = fs::read_to_string(fresh.path().join(name)).unwrap();
        assert!(
            committed == fresh,
            "vendor/etcd-client/src/generated/{name} is not what its .proto files generate ({}); {regenerate}",
            first_difference(&committed, &fresh)
        );
    }
}
