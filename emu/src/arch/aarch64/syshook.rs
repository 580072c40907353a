//! MRS/MSR/SYS hooks registered through Unicorn's C API directly: the Rust binding's
//! proxy returns a Rust `bool` where C expects a `uint32_t`, so the upper bits of
//! "do not skip" are garbage and instructions the hook declined were skipped anyway
//! (observed: `msr vbar_el1` had no effect). This proxy returns a proper `u32`.

use std::ffi::c_void;

use unicorn_engine::{
    uc_error, uc_hook, uc_hook_add, uc_reg_read, uc_reg_write, Arm64Insn, HookType, RegisterARM64,
    RegisterARM64CP, Unicorn,
};

/// One trapped system instruction.
pub struct SysAccess<'a> {
    uc: *mut unicorn_engine::uc_engine,
    rt: RegisterARM64,
    /// The register's encoding; for MSR and SYS, `val` is the value of Xt.
    pub cp: &'a RegisterARM64CP,
}

impl SysAccess<'_> {
    /// The instruction's address (Unicorn syncs the PC before calling the hook).
    pub fn pc(&self) -> u64 {
        let mut pc = 0u64;
        // SAFETY: `uc` is the engine calling this hook; `pc` outlives the call.
        unsafe { uc_reg_read(self.uc, RegisterARM64::PC as i32, (&raw mut pc).cast()) };
        pc
    }

    /// The engine running the hook, to read its registers and memory (a borrowed
    /// handle: dropping it leaves the engine open).
    pub fn engine(&self) -> Option<Unicorn<'static, ()>> {
        // SAFETY: `uc` is the engine calling this hook, alive for the call; a handle
        // made from a raw engine does not close it when dropped.
        unsafe { Unicorn::from_handle(self.uc) }.ok()
    }

    /// Sets Xt (the result of an MRS the hook emulates).
    pub fn set_result(&mut self, value: u64) {
        if self.rt == RegisterARM64::XZR {
            return;
        }
        // SAFETY: `uc` is the engine calling this hook; the value outlives the call.
        unsafe { uc_reg_write(self.uc, self.rt as i32, (&raw const value).cast()) };
    }
}

type Callback = Box<dyn FnMut(&mut SysAccess<'_>) -> bool>;

/// A registered hook; must live as long as the engine it was added to. The callback
/// is boxed twice so that the engine holds a thin, stable pointer to it.
pub struct SysHook {
    _callback: Box<Callback>,
}

unsafe extern "C" fn proxy(
    uc: *mut unicorn_engine::uc_engine,
    rt: RegisterARM64,
    cp: *const RegisterARM64CP,
    user_data: *mut c_void,
) -> u32 {
    // SAFETY: `user_data` is the callback boxed by `add`, alive while the engine is.
    let callback = unsafe { &mut *user_data.cast::<Callback>() };
    // SAFETY: the engine passes `cp`, the register description, valid for the
    // duration of the call.
    let cp = unsafe { &*cp };
    let mut access = SysAccess { uc, rt, cp };
    callback(&mut access) as u32
}

/// Adds a hook for every `insn` (MRS, MSR, SYS); the callback returns `true` to skip
/// the instruction (it emulated it).
pub fn add<D>(
    uc: &mut Unicorn<'_, D>,
    insn: Arm64Insn,
    callback: impl FnMut(&mut SysAccess<'_>) -> bool + 'static,
) -> Result<SysHook, uc_error> {
    let mut callback: Box<Callback> = Box::new(Box::new(callback));
    let mut handle: uc_hook = Default::default();
    // SAFETY: the proxy matches `uc_cb_insn_sys_t`; the boxed callback does not move
    // and the caller keeps it alive as long as the engine.
    let err = unsafe {
        uc_hook_add(
            uc.get_handle(),
            &mut handle,
            HookType::INSN.0 as i32,
            proxy as *mut c_void,
            (&raw mut *callback).cast(),
            1,
            0,
            insn as i32,
        )
    };
    match err {
        uc_error::OK => Ok(SysHook {
            _callback: callback,
        }),
        e => Err(e),
    }
}
