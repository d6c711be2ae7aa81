//! Writes the QleetOS CRD YAML into `crds/yaml/` and the Helm chart's `crds/` folder, and the
//! admission policies into `crds/yaml/` and the chart's `templates/`.
//! With `--check`, writes nothing and fails when the committed files differ.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let (crds, admission) = match (
        qleetos_crds::render_crd_files(),
        qleetos_crds::render_admission_file(),
    ) {
        (Ok(crds), Ok(admission)) => (crds, admission),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("crdgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let root = root();
    let mut outputs = Vec::new();
    for dir in [root.join("crds/yaml"), root.join("charts/qleetos/crds")] {
        outputs.extend(
            crds.iter()
                .map(|(name, yaml)| (dir.join(name), yaml.clone())),
        );
    }
    for dir in [
        root.join("crds/yaml"),
        root.join("charts/qleetos/templates"),
    ] {
        outputs.push((dir.join(&admission.0), admission.1.clone()));
    }
    let mut drifted = Vec::new();
    for (path, yaml) in outputs {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == yaml {
            continue;
        }
        if check {
            drifted.push(path);
        } else if let Err(error) = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &yaml))
        {
            eprintln!("crdgen: writing {}: {error}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
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
