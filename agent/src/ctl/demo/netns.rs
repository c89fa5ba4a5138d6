//! Named network namespaces, made and removed as `ip netns add` / `del` do (a bind mount of
//! a namespace on a file under /run/netns), and work done inside one: a thread that enters
//! the namespace first and ends with the work, so the process's other threads stay where
//! they are (a netlink or raw socket belongs to the namespace of the thread that opened it).

use std::ffi::CString;
use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use rtnetlink::Handle;

pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} has a NUL byte", path.display()))
}

fn mount(source: &Path, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let source = CString::new(source.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let target = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let none = c"none";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call;
    // no data argument.
    let done = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            none.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// /run/netns as iproute2 leaves it: a shared mount (a bind mount on itself when it is not a
/// mount point yet), so namespaces mounted in it show in other mount namespaces too.
fn ensure_netns_dir() -> Result<()> {
    let dir = Path::new(NETNS_DIR);
    fs::create_dir_all(dir).with_context(|| format!("cannot create {NETNS_DIR}"))?;
    let shared = libc::MS_SHARED | libc::MS_REC;
    match mount(Path::new(""), dir, shared) {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point yet.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(dir, dir, libc::MS_BIND | libc::MS_REC)
                .with_context(|| format!("cannot bind-mount {NETNS_DIR} on itself"))?;
            mount(Path::new(""), dir, shared)
                .with_context(|| format!("cannot make {NETNS_DIR} a shared mount"))
        }
        Err(e) => Err(e).with_context(|| format!("cannot make {NETNS_DIR} a shared mount")),
    }
}

/// Creates the namespace `name`. An existing one is an error (it may be someone else's).
pub fn create(name: &str) -> Result<()> {
    ensure_netns_dir()?;
    let file = path(name);
    File::options()
        .write(true)
        .create_new(true)
        .open(&file)
        .with_context(|| {
            format!(
                "cannot create the network namespace file {}",
                file.display()
            )
        })?;
    let target = file.clone();
    let mounted = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: unshare only changes this thread's namespace; the thread ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        mount(
            Path::new("/proc/thread-self/ns/net"),
            &target,
            libc::MS_BIND,
        )
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")));
    if let Err(error) = mounted {
        let _ = fs::remove_file(&file);
        return Err(error).with_context(|| format!("cannot create the network namespace {name}"));
    }
    Ok(())
}

/// Removes the namespace `name` (its links go with it once no process is inside). Returns
/// whether there was one.
pub fn delete(name: &str) -> Result<bool> {
    let file = path(name);
    if !file.exists() {
        return Ok(false);
    }
    let target = c_path(&file)?;
    // SAFETY: a valid NUL-terminated path. EINVAL (not mounted: a half-made one) is fine.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINVAL) {
            return Err(error).with_context(|| format!("cannot unmount {}", file.display()));
        }
    }
    match fs::remove_file(&file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", file.display())),
    }
}

/// The namespaces under /run/netns whose names start with `prefix`, sorted.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

pub fn open(name: &str) -> Result<File> {
    File::open(path(name)).with_context(|| format!("network namespace {name} does not exist"))
}

/// Makes the calling thread enter `netns`.
pub fn enter(netns: &File) -> io::Result<()> {
    // SAFETY: setns on a valid fd changes the calling thread's namespace only.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `work` on a thread inside namespace `name`.
pub fn run_in<T: Send, F>(name: &str, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
{
    let netns = open(name)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(&netns).with_context(|| format!("cannot enter network namespace {name}"))?;
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the worker in namespace {name} panicked")))
    })
}

/// Runs `work` with a netlink handle of namespace `name` (None: the caller's own), on a
/// thread and a runtime of its own.
pub fn netlink_in<T: Send, F, Fut>(name: Option<&str>, work: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    let body = || -> Result<T> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a netlink runtime")?;
        runtime.block_on(async {
            let (connection, handle, _) =
                rtnetlink::new_connection().context("cannot open a netlink socket")?;
            let connection = tokio::spawn(connection);
            let result = work(handle).await;
            connection.abort();
            result
        })
    };
    match name {
        Some(name) => run_in(name, body),
        None => std::thread::scope(|scope| {
            scope
                .spawn(body)
                .join()
                .unwrap_or_else(|_| bail!("the netlink worker panicked"))
        }),
    }
}

/// Runs `work` on a thread in a fresh anonymous namespace that goes when it ends (for
/// probing what the kernel can do without touching any real namespace).
pub fn in_throwaway<T: Send, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: changes this thread's namespace only; the thread ends with the work.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error())
                        .context("cannot make a throwaway network namespace");
                }
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the probe thread panicked")))
    })
}
