//! The README's C example compiles (C99, -Werror) and does what it says.

mod support;

use std::process::Command;
use support::c::{Link, compile_c};
use support::{assert_success, out_dir, readme_blocks, root};

#[test]
fn readme_loop_example_compiles_and_runs() {
    let blocks = readme_blocks("c");
    let example = blocks
        .iter()
        .find(|b| b.contains("int main(void)"))
        .expect("a C example with main in README.md");
    let dir = out_dir("readme");
    let src = dir.join("example.c");
    std::fs::write(&src, example).unwrap();
    let exe = dir.join("example");
    compile_c(&[&src], &exe, Link::Shared, true, &[]);
    let out = Command::new(&exe).output().unwrap();
    assert_success("README example", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "timer 1 fired\nread 5 bytes\n");
}

#[test]
fn readme_names_the_two_setup_commands() {
    let md = std::fs::read_to_string(root().join("README.md")).unwrap();
    let make = std::fs::read_to_string(root().join("Makefile")).unwrap();
    for target in ["run", "test"] {
        assert!(
            md.contains(&format!("make {target} ")),
            "README lacks `make {target}`"
        );
        assert!(
            make.contains(&format!("\n{target}:")),
            "Makefile lacks a `{target}:` rule"
        );
    }
}

#[test]
fn epoll_loop_trace_switches_on_dispatch_tracing() {
    let blocks = readme_blocks("c");
    let example = blocks
        .iter()
        .find(|b| b.contains("int main(void)"))
        .unwrap();
    let dir = out_dir("readme-trace");
    let src = dir.join("example.c");
    std::fs::write(&src, example).unwrap();
    for link in [Link::Shared, Link::Static] {
        let exe = dir.join(format!("example-{link:?}"));
        compile_c(&[&src], &exe, link, false, &[]);
        let quiet = Command::new(&exe)
            .env_remove("EPOLL_LOOP_TRACE")
            .output()
            .unwrap();
        assert_success("example without tracing", &quiet);
        assert!(
            quiet.stderr.is_empty(),
            "the library printed without being asked: {:?}",
            quiet.stderr
        );
        let traced = Command::new(&exe)
            .env("EPOLL_LOOP_TRACE", "1")
            .output()
            .unwrap();
        assert_success("example with tracing", &traced);
        let err = String::from_utf8_lossy(&traced.stderr);
        assert!(
            err.contains("epoll_loop: timer 1: callback"),
            "{link:?}: no timer trace in {err:?}"
        );
        assert!(
            err.contains("events 0x1: callback"),
            "{link:?}: no fd trace in {err:?}"
        );
    }
}
