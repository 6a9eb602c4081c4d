//! The README's C example compiles (C99, -Werror) and does what it says.

mod common;

use common::{Link, assert_success, compile_c, out_dir, root};
use std::process::Command;

fn c_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```c") => cur = Some(String::new()),
            (Some(_), "```") => blocks.push(cur.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn readme_loop_example_compiles_and_runs() {
    let md = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = c_blocks(&md);
    let example = blocks.iter().find(|b| b.contains("int main(void)")).expect("a C example with main in README.md");
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
        assert!(md.contains(&format!("make {target} ")), "README lacks `make {target}`");
        assert!(make.contains(&format!("\n{target}:")), "Makefile lacks a `{target}:` rule");
    }
}
