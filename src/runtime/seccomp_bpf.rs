//! Seccomp profiles compiled once: crun compiles a container's OCI seccomp profile to BPF at
//! every start (the default profile, three architectures: ~14 ms of a 36 ms `nook run --rm`
//! here; Debian's crun 1.8.1 does not cache it). nookd compiles each distinct profile once, the
//! way crun does it (same libseccomp, same calls, in the same order), and hands the program to
//! crun through its `run.oci.seccomp_bpf_data` annotation.
//!
//! libseccomp is loaded at run time (`libseccomp.so.2`, the library crun itself uses), so
//! building nook needs no seccomp headers; without it crun compiles the profile as before.
//! `tests/containers.rs` checks that the program is byte for byte what crun writes itself.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use serde_json::Value;

/// The annotation crun reads the program from.
pub const ANNOTATION: &str = "run.oci.seccomp_bpf_data";

#[repr(C)]
struct ArgCmp {
    arg: c_uint,
    op: c_uint,
    datum_a: u64,
    datum_b: u64,
}

type InitFn = unsafe extern "C" fn(u32) -> *mut c_void;
type ReleaseFn = unsafe extern "C" fn(*mut c_void);
type ArchResolveFn = unsafe extern "C" fn(*const c_char) -> u32;
type ArchAddFn = unsafe extern "C" fn(*mut c_void, u32) -> c_int;
type SyscallResolveFn = unsafe extern "C" fn(*const c_char) -> c_int;
type RuleAddArrayFn = unsafe extern "C" fn(*mut c_void, u32, c_int, c_uint, *const ArgCmp) -> c_int;
type ExportBpfFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;

/// The libseccomp functions crun's compiler uses.
struct Lib {
    init: InitFn,
    release: ReleaseFn,
    arch_resolve_name: ArchResolveFn,
    arch_add: ArchAddFn,
    syscall_resolve_name: SyscallResolveFn,
    rule_add_array: RuleAddArrayFn,
    export_bpf: ExportBpfFn,
}

fn lib() -> Option<&'static Lib> {
    static LIB: OnceLock<Option<Lib>> = OnceLock::new();
    LIB.get_or_init(|| {
        let name = CString::new("libseccomp.so.2").ok()?;
        // SAFETY: dlopen of a system library by name; the handle is kept for the process's
        // life (never dlclose'd), so the symbols stay valid.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return None;
        }
        let sym = |n: &str| -> Option<*mut c_void> {
            let c = CString::new(n).ok()?;
            // SAFETY: dlsym on a live handle.
            let p = unsafe { libc::dlsym(h, c.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        // SAFETY: each symbol is the libseccomp 2.x function of the signature given (stable
        // ABI since 2.0; arch_resolve_name since 2.3).
        unsafe {
            Some(Lib {
                init: std::mem::transmute::<*mut c_void, InitFn>(sym("seccomp_init")?),
                release: std::mem::transmute::<*mut c_void, ReleaseFn>(sym("seccomp_release")?),
                arch_resolve_name: std::mem::transmute::<*mut c_void, ArchResolveFn>(sym(
                    "seccomp_arch_resolve_name",
                )?),
                arch_add: std::mem::transmute::<*mut c_void, ArchAddFn>(sym("seccomp_arch_add")?),
                syscall_resolve_name: std::mem::transmute::<*mut c_void, SyscallResolveFn>(sym(
                    "seccomp_syscall_resolve_name",
                )?),
                rule_add_array: std::mem::transmute::<*mut c_void, RuleAddArrayFn>(sym(
                    "seccomp_rule_add_array",
                )?),
                export_bpf: std::mem::transmute::<*mut c_void, ExportBpfFn>(sym(
                    "seccomp_export_bpf",
                )?),
            })
        }
    })
    .as_ref()
}

const EPERM: u32 = 1;
/// `__NR_SCMP_ERROR`.
const NR_ERROR: c_int = -1;

/// A profile action as crun maps it (`SCMP_ACT_*`, errno/trace carrying `errno_ret`).
fn action(name: &str, errno_ret: u32) -> Option<u32> {
    Some(match name.strip_prefix("SCMP_ACT_")? {
        "ERRNO" => 0x0005_0000 | (errno_ret & 0xffff),
        "TRACE" => 0x7ff0_0000 | (errno_ret & 0xffff),
        "ALLOW" => 0x7fff_0000,
        "KILL" | "KILL_THREAD" => 0,
        "KILL_PROCESS" => 0x8000_0000,
        "TRAP" => 0x0003_0000,
        "LOG" => 0x7ffc_0000,
        "NOTIFY" => 0x7fc0_0000,
        _ => return None,
    })
}

fn operator(name: &str) -> Option<c_uint> {
    Some(match name.strip_prefix("SCMP_CMP_")? {
        "NE" => 1,
        "LT" => 2,
        "LE" => 3,
        "EQ" => 4,
        "GE" => 5,
        "GT" => 6,
        "MASKED_EQ" => 7,
        _ => return None,
    })
}

fn supports_errno(action: &str) -> bool {
    action == "SCMP_ACT_ERRNO" || action == "SCMP_ACT_TRACE"
}

/// The errno `action` carries: `v[key]` (allowed only for errno and trace actions; None when
/// given to another, which crun refuses), else EPERM.
fn errno_ret(v: &Value, key: &str, action: &str) -> Option<u32> {
    match v.get(key).and_then(Value::as_u64) {
        Some(e) if supports_errno(action) => Some(e as u32),
        Some(_) => None,
        None => Some(EPERM),
    }
}

/// A libseccomp filter context, released when dropped.
struct Ctx<'a>(&'a Lib, *mut c_void);

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // SAFETY: a context from seccomp_init, released once.
        unsafe { (self.0.release)(self.1) }
    }
}

/// Compiles an OCI seccomp profile (`linux.seccomp`) to a BPF program as crun does. None when
/// libseccomp is missing or the profile is something crun itself would refuse (then crun
/// reports it).
pub fn compile(profile: &Value) -> Option<Vec<u8>> {
    let lib = lib()?;
    let def = profile["defaultAction"].as_str()?;
    let default_action = action(def, errno_ret(profile, "defaultErrnoRet", def)?)?;
    // SAFETY: seccomp_init returns a new context or null.
    let raw = unsafe { (lib.init)(default_action) };
    if raw.is_null() {
        return None;
    }
    let ctx = Ctx(lib, raw);
    for arch in profile["architectures"].as_array().into_iter().flatten() {
        let a = arch.as_str()?;
        let a = a.strip_prefix("SCMP_ARCH_").unwrap_or(a).to_lowercase();
        let c = CString::new(a).ok()?;
        // SAFETY: a valid C string.
        let token = unsafe { (lib.arch_resolve_name)(c.as_ptr()) };
        if token == 0 {
            return None;
        }
        // SAFETY: a live context and a token libseccomp gave.
        let r = unsafe { (lib.arch_add)(ctx.1, token) };
        if r < 0 && r != -libc::EEXIST {
            return None;
        }
    }
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        let act_name = rule["action"].as_str()?;
        let act = action(act_name, errno_ret(rule, "errnoRet", act_name)?)?;
        if act == default_action {
            continue;
        }
        let args: Vec<&Value> = rule
            .get("args")
            .and_then(Value::as_array)
            .map(|a| a.iter().take(6).collect())
            .unwrap_or_default();
        let mut cmps = Vec::with_capacity(args.len());
        let mut count = [0u32; 6];
        let mut repeated = false;
        for a in &args {
            let index = a["index"].as_u64()?;
            if index >= 6 {
                return None;
            }
            count[index as usize] += 1;
            repeated |= count[index as usize] > 1;
            cmps.push(ArgCmp {
                arg: index as c_uint,
                op: operator(a["op"].as_str()?)?,
                datum_a: a.get("value").and_then(Value::as_u64).unwrap_or(0),
                datum_b: a.get("valueTwo").and_then(Value::as_u64).unwrap_or(0),
            });
        }
        for name in rule["names"].as_array().into_iter().flatten() {
            let c = CString::new(name.as_str()?).ok()?;
            // SAFETY: a valid C string.
            let nr = unsafe { (lib.syscall_resolve_name)(c.as_ptr()) };
            if nr == NR_ERROR {
                continue; // unknown to this libseccomp: crun warns and skips it too
            }
            let ok = if !repeated {
                // SAFETY: cmps holds cmps.len() valid comparisons.
                unsafe {
                    (lib.rule_add_array)(ctx.1, act, nr, cmps.len() as c_uint, cmps.as_ptr()) >= 0
                }
            } else {
                // one rule per comparison, as crun does when an argument repeats
                cmps.iter().all(|c| {
                    // SAFETY: one valid comparison.
                    unsafe { (lib.rule_add_array)(ctx.1, act, nr, 1, c) >= 0 }
                })
            };
            if !ok {
                return None;
            }
        }
    }
    // SAFETY: memfd_create with a valid name; the result is checked and owned.
    let fd = unsafe { libc::memfd_create(c"seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor we own.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: a live context and a writable descriptor.
    if unsafe { (lib.export_bpf)(ctx.1, f.as_raw_fd()) } < 0 {
        return None;
    }
    f.rewind().ok()?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).ok()?;
    Some(out)
}

/// The program for `profile`, base64 for crun's annotation, compiled once per distinct
/// profile.
pub fn annotation_value(profile: &Value) -> Option<String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<String>>>> = OnceLock::new();
    let key = profile.to_string();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return v.clone();
    }
    let v = compile(profile).map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() > 64 {
        c.clear();
    }
    c.insert(key, v.clone());
    v
}

/// Adds the compiled program to a spec for crun (nothing when there is no profile or it
/// cannot be compiled here).
pub fn annotate(spec: &mut Value) {
    let Some(profile) = spec["linux"].get("seccomp").filter(|p| p.is_object()) else {
        return;
    };
    let Some(b64) = annotation_value(profile) else {
        return;
    };
    if !spec["annotations"].is_object() {
        spec["annotations"] = serde_json::json!({});
    }
    spec["annotations"][ANNOTATION] = b64.into();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_the_default_profile_and_refuses_nonsense() {
        let p = serde_json::to_value(super::super::seccomp::default_profile(&[]).unwrap()).unwrap();
        let Some(bpf) = compile(&p) else {
            // no libseccomp.so.2 on this machine: nothing to check
            assert!(lib().is_none());
            return;
        };
        assert!(bpf.len() > 8 && bpf.len() % 8 == 0, "{} bytes", bpf.len());
        // the same profile twice: the same program, from the cache the second time
        assert_eq!(annotation_value(&p), annotation_value(&p));
        let bad = serde_json::json!({"defaultAction": "SCMP_ACT_NOPE", "syscalls": []});
        assert!(compile(&bad).is_none());
        let bad = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]});
        assert!(compile(&bad).is_none());
        let mut spec = serde_json::json!({"linux": {"seccomp": p}});
        annotate(&mut spec);
        assert!(spec["annotations"][ANNOTATION].as_str().unwrap().len() > 8);
        let mut none = serde_json::json!({"linux": {}});
        annotate(&mut none);
        assert!(none.get("annotations").is_none());
    }
}
