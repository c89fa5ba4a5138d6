//! Running programs inside a namespace: to completion with a timeout ([`Exec::run_in`]), or
//! in the background under a guard that kills them on drop ([`Process`]).
//!
//! Each child is started in a process group of its own (its group id is its pid), and every
//! kill is sent to that group while its leader is still unreaped, so the id cannot belong
//! to anyone else: helpers the child forked go with it, and nothing else is ever touched.
//! `ip netns exec` enters the namespace and then `exec`s the program, so the child's pid
//! is the program's own.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// How long [`Exec::run_in`] lets a program run unless told otherwise. Generous: the
/// machine may be busy compiling, and a passing command takes milliseconds anyway.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A program to run: what, with which arguments and environment, fed what on stdin, and
/// for how long at most.
#[derive(Debug, Clone)]
pub struct Exec {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// What a finished program did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, with the environment it was given, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The exit code, or `None` when a signal ended the program.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing everything the program printed, unless it exited with 0.
    #[track_caller]
    pub fn expect_success(self) -> Output {
        assert!(self.success(), "expected success: {self}");
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ending = match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exited with {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => format!("ended with {}", self.status),
        };
        write!(
            f,
            "`{}` {ending}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.command, self.stdout, self.stderr
        )
    }
}

impl Exec {
    pub fn new(program: impl AsRef<OsStr>) -> Exec {
        Exec {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Exec {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
        self
    }

    /// Sets a variable on top of the test process's environment.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Exec {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    pub fn envs<I, K, V>(self, vars: I) -> Exec
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter()
            .fold(self, |exec, (key, value)| exec.env(key, value))
    }

    /// Removes a variable the test process may have inherited, so that the program does not
    /// see, say, an `IP_AUTODETECTION_METHOD` from the shell that ran `make test`.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Exec {
        self.env_remove.push(key.as_ref().to_os_string());
        self
    }

    /// Bytes written to the program's stdin (which is otherwise empty).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Exec {
        self.stdin = Some(bytes.into());
        self
    }

    /// The longest [`Exec::run_in`] waits before killing the program and failing.
    pub fn timeout(mut self, timeout: Duration) -> Exec {
        self.timeout = timeout;
        self
    }

    /// Runs the program inside `netns` to completion and returns what it did, whatever its
    /// exit status. Panics, with the output so far, if it outlives the timeout (after
    /// killing it).
    #[track_caller]
    pub fn run_in(&self, netns: &Netns) -> Output {
        self.try_run(Some(netns.name()))
            .unwrap_or_else(|timed_out| panic!("{timed_out}"))
    }

    /// Starts the program inside `netns` in the background. The returned guard kills it
    /// when dropped.
    pub fn spawn_in(&self, netns: &Netns) -> Process {
        Process {
            running: Some(self.start(Some(netns.name()))),
        }
    }

    /// Runs the program to completion in the test process's own namespace: for commands
    /// that only read (`ip -n <ns> route show`, `tortiectl` on a socket path), never for
    /// anything that configures links or addresses.
    #[track_caller]
    pub fn run_here(&self) -> Output {
        self.try_run_here()
            .unwrap_or_else(|timed_out| panic!("{timed_out}"))
    }

    /// Runs the program in the test process's own namespace: for `ip netns add` and
    /// friends, never for anything that configures links or addresses.
    pub(crate) fn try_run_here(&self) -> Result<Output, String> {
        self.try_run(None)
    }

    fn try_run(&self, netns: Option<&str>) -> Result<Output, String> {
        let mut running = self.start(netns);
        let started = Instant::now();
        let mut interval = Duration::from_millis(1);
        loop {
            if running.has_exited() {
                return Ok(running.finish());
            }
            let elapsed = started.elapsed();
            if elapsed >= self.timeout {
                running.kill(libc::SIGKILL);
                let output = running.finish();
                return Err(format!(
                    "timed out after {elapsed:.1?} (limit {:.1?}), killed: {output}",
                    self.timeout
                ));
            }
            thread::sleep(interval.min(self.timeout - elapsed));
            interval = (interval * 2).min(Duration::from_millis(20));
        }
    }

    fn describe(&self, netns: Option<&str>) -> String {
        let mut words: Vec<String> = self
            .env
            .iter()
            .map(|(key, value)| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
            .collect();
        if let Some(netns) = netns {
            words.extend(["ip", "netns", "exec", netns].map(String::from));
        }
        words.push(self.program.to_string_lossy().into_owned());
        words.extend(
            self.args
                .iter()
                .map(|arg| arg.to_string_lossy().into_owned()),
        );
        words.join(" ")
    }

    fn start(&self, netns: Option<&str>) -> Running {
        let description = self.describe(netns);
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        };
        command.args(&self.args);
        for key in &self.env_remove {
            command.env_remove(key);
        }
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().unwrap_or_else(|error| {
            let program = command.get_program().to_string_lossy().into_owned();
            if error.kind() == io::ErrorKind::NotFound {
                panic!(
                    "cannot run `{description}`: {program} not found (iproute2's `ip` is \
                     installed by `make test`; tortie's binaries by \
                     `cargo build --workspace --bins`)"
                )
            }
            panic!("cannot run `{description}`: {error}")
        });

        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut helpers = vec![
            collect(child.stdout.take(), Arc::clone(&stdout)),
            collect(child.stderr.take(), Arc::clone(&stderr)),
        ];
        if let (Some(bytes), Some(pipe)) = (self.stdin.clone(), child.stdin.take()) {
            helpers.push(feed(pipe, bytes));
        }
        Running {
            child,
            description,
            stdout,
            stderr,
            helpers,
        }
    }
}

/// Runs `program args` inside `netns` with `env` added to the environment, to completion
/// within [`DEFAULT_TIMEOUT`]. Shorthand for [`Exec`], which also removes variables, feeds
/// stdin and sets other timeouts.
#[track_caller]
pub fn run_in<A>(netns: &Netns, program: impl AsRef<OsStr>, args: A, env: &[(&str, &str)]) -> Output
where
    A: IntoIterator,
    A::Item: AsRef<OsStr>,
{
    Exec::new(program)
        .args(args)
        .envs(env.iter().copied())
        .run_in(netns)
}

/// A program running in the background, killed (with its process group) when dropped.
/// Declare it after the [`Netns`] it runs in, so that it is dropped first.
pub struct Process {
    running: Option<Running>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.running().child.id()
    }

    /// Everything the program has written to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        lossy(&self.running().stdout)
    }

    /// Everything the program has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        lossy(&self.running().stderr)
    }

    /// Whether the program has ended (it stays unreaped until [`Process::stop`],
    /// [`Process::wait`] or drop).
    pub fn has_exited(&self) -> bool {
        self.running().has_exited()
    }

    /// Asks the program to stop with SIGTERM, kills it after `grace` if it has not, and
    /// returns what it did.
    pub fn stop(mut self, grace: Duration) -> Output {
        let mut running = self.running.take().expect("a Process runs until consumed");
        running.kill(libc::SIGTERM);
        let started = Instant::now();
        while !running.has_exited() && started.elapsed() < grace {
            thread::sleep(Duration::from_millis(10));
        }
        running.kill(libc::SIGKILL);
        running.finish()
    }

    /// Waits for the program to end by itself and returns what it did; kills it and panics
    /// if it is still running after `within`.
    #[track_caller]
    pub fn wait(mut self, within: Duration) -> Output {
        let mut running = self.running.take().expect("a Process runs until consumed");
        let started = Instant::now();
        while !running.has_exited() {
            if started.elapsed() >= within {
                running.kill(libc::SIGKILL);
                let output = running.finish();
                panic!("still running after {within:.1?}, killed: {output}");
            }
            thread::sleep(Duration::from_millis(10));
        }
        running.finish()
    }

    fn running(&self) -> &Running {
        self.running
            .as_ref()
            .expect("a Process runs until consumed")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.kill(libc::SIGKILL);
            // Reap it; the output threads end by themselves once the pipes close.
            let _ = running.child.wait();
        }
    }
}

/// A started child, its output being collected by helper threads.
struct Running {
    child: Child,
    description: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    helpers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Whether the child has ended, without reaping it: while it is a zombie its pid (and
    /// so its process group id) cannot be reused, which keeps [`Running::kill`] safe.
    fn has_exited(&self) -> bool {
        // SAFETY: an all-zero siginfo_t is valid; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the child unreaped.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // With WNOHANG, si_pid stays 0 while the child runs. An error means it is gone
        // (already reaped), which counts as ended.
        // SAFETY: waitid filled (or left zeroed) a siginfo_t for SIGCHLD, whose si_pid is set.
        result != 0 || unsafe { info.si_pid() } != 0
    }

    /// Sends `signal` to the child's process group. Called only before the child is reaped.
    fn kill(&mut self, signal: libc::c_int) {
        let Ok(group) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: plain syscall. The group id is our unreaped child's pid (process_group(0)),
        // so it names our child's group and no one else's. ESRCH (all gone) is fine.
        unsafe {
            libc::kill(-group, signal);
        }
    }

    /// Reaps the child, kills anything it left behind in its group, and collects its output.
    fn finish(mut self) -> Output {
        // The leader has exited (or been killed); its stragglers would hold the pipes open.
        self.kill(libc::SIGKILL);
        let status = self
            .child
            .wait()
            .unwrap_or_else(|error| panic!("waiting for `{}`: {error}", self.description));
        for helper in self.helpers.drain(..) {
            let _ = helper.join();
        }
        Output {
            command: self.description.clone(),
            status,
            stdout: lossy(&self.stdout),
            stderr: lossy(&self.stderr),
        }
    }
}

fn collect(pipe: Option<impl Read + Send + 'static>, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => sink
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .extend_from_slice(&buffer[..read]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

fn feed(mut pipe: ChildStdin, bytes: Vec<u8>) -> JoinHandle<()> {
    // A program may exit without reading all of its input: a broken pipe is its business.
    thread::spawn(move || {
        let _ = pipe.write_all(&bytes);
    })
}

fn lossy(buffer: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(
        &buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
    .into_owned()
}
