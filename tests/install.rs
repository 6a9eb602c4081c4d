//! `make install` / `make uninstall` as a user runs them: into a temporary
//! prefix (and a `DESTDIR` staging tree), then a program built against the
//! installed copy with `cc demo.c $(pkg-config --cflags --libs epoll_loop)`,
//! with `--static` and against the archive alone, and `app.c` built with the
//! README's Make, CMake and Meson snippets; finally `make uninstall` must leave
//! no file behind.
//!
//! `make install` builds the release library (`cargo build --release` in the
//! same target directory), as a user's `make install` would.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::c::{C_WARN, cc};
use support::{assert_success, have_tool, lib_dir, out_dir, readme_blocks, root, tool_or_skip};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAJOR: &str = env!("CARGO_PKG_VERSION_MAJOR");

/// `make -C <root> ARGS...`, without the outer make's jobserver and in the
/// target directory of this test run.
fn make(args: &[&str]) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(root()).args(args);
    cmd.env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env(
            "CARGO_TARGET_DIR",
            lib_dir().parent().unwrap().parent().unwrap(),
        );
    cmd
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert_success(what, &o);
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A fresh scratch directory for one test; removed at the end when it passed.
struct Work(PathBuf);

impl Work {
    fn new(name: &str) -> Work {
        let d = out_dir("install").join(format!("{name}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Work(d)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Every non-directory under `dir`, relative, sorted (symlinks as `name -> target`).
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if meta.is_dir() {
                walk(base, &p, out);
            } else if meta.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What `make install` puts under a root with the given lib/include subdirectories.
fn expected_files(libdir: &str, includedir: &str) -> Vec<String> {
    let mut v = vec![
        format!("{includedir}/epoll_loop.h"),
        format!("{libdir}/libepoll_loop.a"),
        format!("{libdir}/libepoll_loop.so -> libepoll_loop.so.{MAJOR}"),
        format!("{libdir}/libepoll_loop.so.{MAJOR} -> libepoll_loop.so.{VERSION}"),
        format!("{libdir}/libepoll_loop.so.{VERSION}"),
        format!("{libdir}/pkgconfig/epoll_loop.pc"),
    ];
    v.sort();
    v
}

/// The demo built against the installed library: the header and the library
/// agree on the version, and a timer and an echo server round trip work.
const DEMO_C: &str = r#"
#include <epoll_loop.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_timer(epoll_loop *loop, uint64_t id, void *ud)
{
    (void)loop;
    (void)id;
    (*(int *)ud)++;
}

int main(void)
{
    epoll_loop *loop = NULL;
    echo_server *srv = NULL;
    echo_server_config cfg;
    struct sockaddr_in addr;
    char buf[16] = {0};
    int fired = 0, fd = -1, rc = 1;

    if (epoll_loop_version() != EPOLL_LOOP_VERSION_HEX ||
        strcmp(epoll_loop_version_string(), EPOLL_LOOP_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", EPOLL_LOOP_VERSION_STRING,
                epoll_loop_version_string());
        return 1;
    }
    if (epoll_loop_new(&loop) != 0)
        return 1;
    if (epoll_loop_timer_start(loop, 1, 0, on_timer, &fired, NULL) != 0)
        goto cleanup;
    if (epoll_loop_run(loop) != 0 || fired != 1)
        goto cleanup;

    echo_server_config_init(&cfg);
    cfg.port = 0;
    if (echo_server_start(&cfg, &srv) != 0)
        goto cleanup;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)echo_server_port(srv));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        goto cleanup;
    if (send(fd, "ping", 4, 0) != 4 || recv(fd, buf, 4, MSG_WAITALL) != 4 || strcmp(buf, "ping") != 0)
        goto cleanup;
    printf("demo: epoll_loop %s: timer and echo ok\n", epoll_loop_version_string());
    rc = 0;
cleanup:
    if (fd >= 0)
        close(fd);
    echo_server_stop(srv);
    epoll_loop_free(loop);
    return rc;
}
"#;

fn pkg_config(pc_path: &Path, args: &[&str]) -> String {
    let o = run(
        &format!("pkg-config {}", args.join(" ")),
        Command::new("pkg-config")
            .args(args)
            .arg("epoll_loop")
            .env("PKG_CONFIG_PATH", pc_path)
            .env_remove("PKG_CONFIG_LIBDIR"),
    );
    stdout(&o)
}

fn cc_with(src: &Path, exe: &Path, flags: &str) {
    run(
        &format!("cc demo.c {flags}"),
        Command::new(cc())
            .args(C_WARN)
            .arg(src)
            .arg("-o")
            .arg(exe)
            .args(flags.split_whitespace()),
    );
}

fn needs_libepoll_loop(exe: &Path) -> bool {
    let o = run("readelf -d", Command::new("readelf").arg("-d").arg(exe));
    stdout(&o).contains(&format!("[libepoll_loop.so.{MAJOR}]"))
}

/// Runs `exe` with only `libdir` on the loader's path (cargo puts target/debug
/// there for tests; the installed copy must be the one found).
fn run_installed(what: &str, exe: &Path, libdir: Option<&Path>) -> Output {
    let mut cmd = Command::new(exe);
    match libdir {
        Some(d) => cmd.env("LD_LIBRARY_PATH", d),
        None => cmd.env_remove("LD_LIBRARY_PATH"),
    };
    run(what, &mut cmd)
}

fn the_readme_block(lang: &str) -> String {
    let mut b = readme_blocks(lang);
    assert_eq!(b.len(), 1, "README.md should have one ```{lang} block");
    b.remove(0)
}

/// The README's C example (it prints "timer 1 fired" and "read 5 bytes").
fn readme_app_c() -> String {
    readme_blocks("c")
        .into_iter()
        .find(|b| b.contains("int main(void)"))
        .expect("the README's C example")
}

fn have(tool: &str) -> bool {
    tool_or_skip(
        have_tool(tool),
        tool,
        &format!("the README's {tool} instructions"),
    )
}

/// Builds the README's C example in `dir` with one build system and checks its output.
fn check_app(what: &str, exe: &Path, libdir: &Path) {
    let o = run_installed(what, exe, Some(libdir));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "timer 1 fired\nread 5 bytes\n",
        "{what}: output"
    );
}

fn readme_build_systems(work: &Path, prefix: &Path) {
    let libdir = prefix.join("lib");
    let pc_path = libdir.join("pkgconfig");
    let app = readme_app_c();

    // Make
    let d = work.join("make-app");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("app.c"), &app).unwrap();
    std::fs::write(d.join("Makefile"), the_readme_block("make")).unwrap();
    run(
        "make with the README's Makefile",
        Command::new("make")
            .arg("-C")
            .arg(&d)
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .env("PKG_CONFIG_PATH", &pc_path),
    );
    check_app("app built by make", &d.join("app"), &libdir);

    // CMake: found through CMAKE_PREFIX_PATH, as the README says.
    if have("cmake") {
        let d = work.join("cmake-app");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("app.c"), &app).unwrap();
        std::fs::write(d.join("CMakeLists.txt"), the_readme_block("cmake")).unwrap();
        run(
            "cmake configure with the README's CMakeLists.txt",
            Command::new("cmake")
                .arg("-S")
                .arg(&d)
                .arg("-B")
                .arg(d.join("build"))
                .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
                .env_remove("PKG_CONFIG_PATH")
                .env_remove("MAKEFLAGS"),
        );
        run(
            "cmake --build",
            Command::new("cmake")
                .arg("--build")
                .arg(d.join("build"))
                .env_remove("MAKEFLAGS")
                .env_remove("MFLAGS")
                .env_remove("MAKELEVEL"),
        );
        check_app("app built by cmake", &d.join("build").join("app"), &libdir);
    }

    // Meson: found through --pkg-config-path, as the README says.
    if have("meson") && have("ninja") {
        let d = work.join("meson-app");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("app.c"), &app).unwrap();
        std::fs::write(d.join("meson.build"), the_readme_block("meson")).unwrap();
        run(
            "meson setup with the README's meson.build",
            Command::new("meson")
                .arg("setup")
                .arg(d.join("build"))
                .arg(&d)
                .arg("--pkg-config-path")
                .arg(&pc_path)
                .env_remove("PKG_CONFIG_PATH"),
        );
        run(
            "meson compile",
            Command::new("meson")
                .args(["compile", "-C"])
                .arg(d.join("build"))
                .env_remove("MAKEFLAGS"),
        );
        check_app("app built by meson", &d.join("build").join("app"), &libdir);
    }
}

#[test]
fn make_install_then_pkg_config_builds_then_make_uninstall_leaves_nothing() {
    let work = Work::new("prefix");
    let prefix = work.0.join("prefix");
    let prefix_arg = format!("PREFIX={}", prefix.display());
    run("make install", &mut make(&["install", &prefix_arg]));
    // Twice: a reinstall over an existing tree works too.
    run("make install (again)", &mut make(&["install", &prefix_arg]));

    assert_eq!(
        files_under(&prefix),
        expected_files("lib", "include"),
        "the installed files"
    );
    let libdir = prefix.join("lib");
    let so = libdir.join(format!("libepoll_loop.so.{VERSION}"));
    let dynamic = stdout(&run(
        "readelf -d",
        Command::new("readelf").arg("-d").arg(&so),
    ));
    assert!(
        dynamic.contains("(SONAME)") && dynamic.contains(&format!("[libepoll_loop.so.{MAJOR}]")),
        "the installed library's soname:\n{dynamic}"
    );
    let header = std::fs::read(prefix.join("include/epoll_loop.h")).unwrap();
    assert_eq!(
        header,
        std::fs::read(root().join("include/epoll_loop.h")).unwrap(),
        "the installed header"
    );

    // pkg-config
    let pc_path = libdir.join("pkgconfig");
    assert_eq!(pkg_config(&pc_path, &["--modversion"]), VERSION);
    assert_eq!(
        pkg_config(&pc_path, &["--cflags"]),
        format!("-I{}/include", prefix.display())
    );
    assert_eq!(
        pkg_config(&pc_path, &["--libs"]),
        format!("-L{} -lepoll_loop", libdir.display())
    );
    let static_libs = pkg_config(&pc_path, &["--static", "--libs"]);
    assert_eq!(
        static_libs,
        format!(
            "-L{} -lepoll_loop {}",
            libdir.display(),
            support::c::STATIC_LIBS.join(" ")
        ),
        "pkg-config --static --libs (Libs.private)"
    );

    let src = work.0.join("demo.c");
    std::fs::write(&src, DEMO_C).unwrap();
    let want = format!("demo: epoll_loop {VERSION}: timer and echo ok");

    // 1. cc demo.c $(pkg-config --cflags --libs epoll_loop): linked to the soname.
    let exe = work.0.join("demo-shared");
    let flags = format!(
        "{} {}",
        pkg_config(&pc_path, &["--cflags"]),
        pkg_config(&pc_path, &["--libs"])
    );
    cc_with(&src, &exe, &flags);
    assert!(
        needs_libepoll_loop(&exe),
        "demo-shared does not need libepoll_loop.so.{MAJOR}"
    );
    assert_eq!(
        stdout(&run_installed("demo-shared", &exe, Some(&libdir))),
        want
    );

    // 2. The same with --static, as typed (the linker still picks the .so).
    let exe = work.0.join("demo-static-flags");
    let flags = pkg_config(&pc_path, &["--static", "--cflags", "--libs"]);
    cc_with(&src, &exe, &flags);
    assert_eq!(
        stdout(&run_installed("demo (--static flags)", &exe, Some(&libdir))),
        want
    );

    // 3. The archive: Libs.private must be all it needs; no libepoll_loop.so at run time.
    let exe = work.0.join("demo-archive");
    let flags = format!(
        "{} {}",
        pkg_config(&pc_path, &["--cflags"]),
        static_libs.replace("-lepoll_loop", "-l:libepoll_loop.a")
    );
    cc_with(&src, &exe, &flags);
    assert!(
        !needs_libepoll_loop(&exe),
        "demo-archive still needs libepoll_loop.so"
    );
    assert_eq!(stdout(&run_installed("demo-archive", &exe, None)), want);

    // The README's Make, CMake and Meson instructions.
    readme_build_systems(&work.0, &prefix);

    run("make uninstall", &mut make(&["uninstall", &prefix_arg]));
    let left = files_under(&prefix);
    assert!(
        left.is_empty(),
        "make uninstall left files behind: {left:?}"
    );
    // And once more on an empty tree: nothing to remove is not an error.
    run(
        "make uninstall (again)",
        &mut make(&["uninstall", &prefix_arg]),
    );
}

#[test]
fn destdir_staging_with_a_custom_libdir_is_relocatable() {
    let work = Work::new("destdir");
    let stage = work.0.join("stage");
    let args = [
        "PREFIX=/opt/epoll-loop".to_string(),
        "LIBDIR=/opt/epoll-loop/lib64".to_string(),
        format!("DESTDIR={}", stage.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut install = vec!["install"];
    install.extend(&args);
    run("make install DESTDIR=...", &mut make(&install));

    let root_dir = stage.join("opt/epoll-loop");
    assert_eq!(
        files_under(&stage),
        expected_files("opt/epoll-loop/lib64", "opt/epoll-loop/include"),
        "the staged files"
    );
    let pc = std::fs::read_to_string(root_dir.join("lib64/pkgconfig/epoll_loop.pc")).unwrap();
    for line in [
        "prefix=/opt/epoll-loop",
        "exec_prefix=${prefix}",
        "libdir=${exec_prefix}/lib64",
        "includedir=${prefix}/include",
        &format!("Version: {VERSION}"),
    ] {
        assert!(
            pc.lines().any(|l| l == line),
            "epoll_loop.pc lacks {line:?} (DESTDIR must not leak into it):\n{pc}"
        );
    }
    assert!(
        !pc.contains(&stage.display().to_string()),
        "DESTDIR in epoll_loop.pc:\n{pc}"
    );

    // Relative paths in the .pc file let pkg-config relocate the tree.
    let pc_path = root_dir.join("lib64/pkgconfig");
    let cflags = pkg_config(&pc_path, &["--define-prefix", "--cflags"]);
    assert_eq!(cflags, format!("-I{}/include", root_dir.display()));
    let libs = pkg_config(&pc_path, &["--define-prefix", "--libs"]);
    assert_eq!(libs, format!("-L{}/lib64 -lepoll_loop", root_dir.display()));

    let mut uninstall = vec!["uninstall"];
    uninstall.extend(&args);
    run("make uninstall DESTDIR=...", &mut make(&uninstall));
    let left = files_under(&stage);
    assert!(
        left.is_empty(),
        "make uninstall left files behind: {left:?}"
    );
}
