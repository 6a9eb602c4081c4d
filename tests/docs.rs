//! `make docs`: with Doxygen it renders the header (and README) to HTML
//! covering every exported function, without warnings; without Doxygen it says
//! so in one clear line and succeeds. (That every declaration in the header has
//! its doc block is checked in tests/c_abi.rs.)

mod support;

use std::process::Command;
use support::{assert_success, have_tool, out_dir, root, tool_or_skip};

fn make_docs(doxygen: &str, doc_dir: &std::path::Path) -> std::process::Output {
    let o = Command::new("make")
        .arg("-C")
        .arg(root())
        .arg("--no-print-directory")
        .arg("docs")
        .arg(format!("DOXYGEN={doxygen}"))
        .arg(format!("DOC_DIR={}", doc_dir.display()))
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("run make docs");
    assert_success("make docs", &o);
    o
}

#[test]
fn make_docs_without_doxygen_says_so() {
    let dir = out_dir("docs").join(format!("none.{}", std::process::id()));
    let o = make_docs("/nonexistent/doxygen", &dir);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("make docs: doxygen is not installed")
            && out.contains("apt-get install doxygen"),
        "make docs without doxygen printed:\n{out}"
    );
    assert!(
        !dir.exists(),
        "make docs without doxygen created {}",
        dir.display()
    );
}

#[test]
fn make_docs_renders_the_header_with_doxygen() {
    if !tool_or_skip(
        have_tool("doxygen"),
        "doxygen",
        "rendering make docs with Doxygen",
    ) {
        return;
    }
    let dir = out_dir("docs").join(format!("html.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = make_docs("doxygen", &dir);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("make docs: wrote"),
        "make docs printed:\n{out}"
    );

    let page = std::fs::read_to_string(dir.join("html").join("epoll__loop_8h.html"))
        .expect("Doxygen's page for epoll_loop.h");
    let symbols = std::fs::read_to_string(root().join("docs/abi/symbols.txt")).unwrap();
    let missing: Vec<&str> = symbols
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|name| !page.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "not on the rendered header page: {missing:?}"
    );
    assert!(
        page.contains("Thread safety"),
        "the doc blocks are not rendered"
    );
    assert!(dir.join("html").join("index.html").exists());
    let warnings = std::fs::read_to_string(dir.join("doxygen-warnings.txt")).unwrap_or_default();
    assert!(warnings.trim().is_empty(), "Doxygen warnings:\n{warnings}");
    let _ = std::fs::remove_dir_all(&dir);
}
