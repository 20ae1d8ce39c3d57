//! The deployable zip: `host.json`, `<Function>/function.json` and the
//! handler with mode 0o755 at the root, and nothing else (no
//! `local.settings.json`, no `target/`, no stray files), checked by opening
//! the zip; and the CLI refuses a handler Azure could not run.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A copy of the repository's app plus files that must stay out of the zip.
fn app_with_clutter() -> tempfile::TempDir {
    let app = tempfile::tempdir().unwrap();
    let root = repo_root();
    std::fs::copy(root.join("host.json"), app.path().join("host.json")).unwrap();
    for entry in std::fs::read_dir(root.join("function-app")).unwrap() {
        let from = entry.unwrap().path();
        let to = app.path().join("function-app").join(from.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(from.join("function.json"), to.join("function.json")).unwrap();
    }
    let clutter = [
        "local.settings.json",
        "local.settings.example.json",
        "Cargo.toml",
        "target/release/handler",
        ".devhost/run.json",
        "function-app/Ping/notes.md",
    ];
    for f in clutter {
        let p = app.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "{}").unwrap();
    }
    app
}

fn function_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("function-app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The zip holds host.json, each function.json and the handler (mode 0o755,
/// whatever the file's own mode) and nothing else of a cluttered app root:
/// no local.settings.json, Cargo.toml, target/, .devhost/ or stray files.
#[test]
fn zip_holds_exactly_the_app_with_an_executable_handler() {
    let app = app_with_clutter();
    let handler = app.path().join("built-handler");
    std::fs::write(&handler, b"\x7fELF not really").unwrap();
    // Packaging sets the bit itself, whatever the file's own mode.
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = app.path().join("dist/functionapp.zip");

    let written = devhost::package::write_zip(app.path(), &handler, &out).unwrap();

    let mut expected: BTreeSet<String> = function_names().iter().map(|n| format!("{n}/function.json")).collect();
    expected.insert("host.json".into());
    expected.insert("handler".into());
    assert_eq!(written.iter().cloned().collect::<BTreeSet<_>>(), expected);

    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let name = entry.name().to_string();
        assert!(!entry.is_dir(), "{name}: no directory entries");
        let mode = entry.unix_mode().unwrap_or_else(|| panic!("{name} has no Unix mode"));
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name == "handler" {
            assert_eq!(mode & 0o777, 0o755, "handler mode {mode:o}");
            assert_eq!(mode & 0o170000, 0o100000, "a regular file: {mode:o}");
            assert_eq!(bytes, b"\x7fELF not really");
        } else {
            assert_eq!(mode & 0o111, 0, "{name} is not executable: {mode:o}");
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if name == "host.json" {
                assert_eq!(json["customHandler"]["description"]["defaultExecutablePath"], "handler");
            } else {
                assert!(json["bindings"].is_array(), "{name}");
            }
        }
        names.insert(name);
    }
    assert_eq!(names, expected, "nothing else in the zip");
}

/// Writes an ELF header for x86-64 (64-bit, little-endian, e_machine
/// 0x3e) to `path`, what the package's check reads (a real binary would
/// only make the tests slower), and returns its bytes.
fn write_x86_64_elf_header(path: &Path) -> Vec<u8> {
    let mut header = b"\x7fELF\x02\x01\x01".to_vec();
    header.resize(16, 0);
    header.extend_from_slice(&[2, 0, 0x3e, 0]);
    header.resize(64, 0);
    std::fs::write(path, &header).unwrap();
    header
}

/// `devhost package` refuses a handler that is not a Linux x86-64
/// executable (no zip written) and packages one that is, as a readable zip
/// with the handler executable.
#[test]
fn cli_refuses_a_handler_azure_cannot_run_and_packages_one_it_can() {
    let app = app_with_clutter();
    let fake = app.path().join("script");
    std::fs::write(&fake, "#!/bin/sh\necho hi\n").unwrap();
    let out = app.path().join("out.zip");
    let run = |handler: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_devhost"))
            .args(["package", "--app-root"])
            .arg(app.path())
            .arg("--handler")
            .arg(handler)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let refused = run(&fake);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not a Linux x86-64 executable"), "{err}");
    assert!(!out.exists(), "no zip from a refused handler");

    let elf = app.path().join("elf-handler");
    write_x86_64_elf_header(&elf);
    let done = run(&elf);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(zip.len(), function_names().len() + 2);
    assert_eq!(zip.by_name("handler").unwrap().unix_mode().unwrap() & 0o777, 0o755);
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o644, 0o644, "the zip itself is readable: {mode:o}");
}

/// A stand-in for `cargo` (`$CARGO`) that writes its arguments to
/// `args.txt` beside it; given `built`, it reports that file as the
/// handler it built (Cargo's `compiler-artifact` message) and succeeds,
/// else it fails as a build for a missing target does.
fn fake_cargo(dir: &Path, built: Option<&Path>) -> PathBuf {
    let script = dir.join("fake-cargo");
    let args = dir.join("args.txt");
    let body = match built {
        Some(b) => format!(
            "echo '{{\"reason\":\"compiler-artifact\",\"target\":{{\"kind\":[\"bin\"],\"name\":\"handler\"}},\"executable\":\"{}\"}}'\nexit 0\n",
            b.display()
        ),
        None => "echo 'error[E0463]: can'\"'\"'t find crate for `core`' >&2\nexit 101\n".to_owned(),
    };
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" > '{}'\n{body}", args.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `devhost package` builds a static binary (`--target
/// x86_64-unknown-linux-musl`) unless told another target, and when that
/// build fails it says what the target needs; no zip then.
#[test]
fn cli_builds_for_static_musl_unless_told_otherwise() {
    let app = app_with_clutter();
    let tools = tempfile::tempdir().unwrap();
    let out = app.path().join("out.zip");
    let run = |cargo: &Path, target: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_devhost"));
        cmd.args(["package", "--app-root"])
            .arg(app.path())
            .arg("--out")
            .arg(&out);
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        cmd.env("CARGO", cargo).output().unwrap()
    };
    let args = || std::fs::read_to_string(tools.path().join("args.txt")).unwrap();

    let failing = fake_cargo(tools.path(), None);
    let failed = run(&failing, None);
    assert!(!failed.status.success());
    assert!(
        args().contains("--release --target x86_64-unknown-linux-musl"),
        "{}",
        args()
    );
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("rustup target add x86_64-unknown-linux-musl"), "{err}");
    assert!(err.contains("musl-tools"), "{err}");
    assert!(!out.exists(), "no zip from a failed build");

    // The target asked for is the one built, and its binary is packaged.
    let elf = tools.path().join("handler");
    let header = write_x86_64_elf_header(&elf);
    let building = fake_cargo(tools.path(), Some(&elf));
    let done = run(&building, Some("x86_64-unknown-linux-gnu"));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(
        args().contains("--release --target x86_64-unknown-linux-gnu"),
        "{}",
        args()
    );
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mut packaged = Vec::new();
    zip.by_name("handler").unwrap().read_to_end(&mut packaged).unwrap();
    assert_eq!(packaged, header);
}
