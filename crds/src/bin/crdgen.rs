//! Writes the QleetOS CRD YAML into `crds/yaml/` and the Helm chart's `crds/` folder.
//! With `--check`, writes nothing and fails when the committed files differ.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn targets() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    vec![root.join("crds/yaml"), root.join("charts/qleetos/crds")]
}

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let files = match qleetos_crds::render_crd_files() {
        Ok(files) => files,
        Err(error) => {
            eprintln!("crdgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut drifted = Vec::new();
    for dir in targets() {
        for (name, yaml) in &files {
            let path = dir.join(name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == *yaml {
                continue;
            }
            if check {
                drifted.push(path);
            } else if let Err(error) =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, yaml))
            {
                eprintln!("crdgen: writing {}: {error}", path.display());
                return ExitCode::FAILURE;
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if drifted.is_empty() {
        return ExitCode::SUCCESS;
    }
    for path in drifted {
        eprintln!(
            "crdgen: {} differs from the Rust types; run `make generate` and commit",
            path.display()
        );
    }
    ExitCode::FAILURE
}
