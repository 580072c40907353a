//! What can go wrong in building or driving a machine (apart from how a run ends,
//! which is [`crate::RunEnd`]): one type every module of the crate returns.

use std::fmt;

use crate::kernel::KernelError;

/// Why a machine could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmuError {
    /// The configuration asks for what the machine cannot be.
    Config(String),
    /// The kernel cannot be loaded.
    Kernel(KernelError),
    /// The engine refused a call.
    Unicorn {
        /// What the machine was doing.
        during: &'static str,
        /// The engine's error.
        error: String,
    },
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(why) => write!(f, "invalid machine configuration: {why}"),
            Self::Kernel(e) => e.fmt(f),
            Self::Unicorn { during, error } => write!(f, "emulator error while {during}: {error}"),
        }
    }
}

impl std::error::Error for EmuError {}

impl From<KernelError> for EmuError {
    fn from(e: KernelError) -> Self {
        Self::Kernel(e)
    }
}

/// Maps a Unicorn error to [`EmuError::Unicorn`], saying what was being done.
pub(crate) fn uc_err(during: &'static str) -> impl Fn(unicorn_engine::uc_error) -> EmuError {
    move |e| EmuError::Unicorn {
        during,
        error: format!("{e:?}"),
    }
}
