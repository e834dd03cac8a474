//! Where the networks run: `--device cpu | cuda[:N] | wgpu[:N]`, parsed into an explicit burn
//! device. burn's `Device::default()` picks the first GPU backend compiled in, so with a GPU
//! feature enabled "the default device" silently stops being the CPU; diffuse never uses it.
//! float64 work (schedule tables, the forward process, x_t and targets, SPEC §1-§3) always runs
//! on [`cpu`], so every path works on devices without float64 (wgpu has none).

use crate::{Error, Result};
use burn::tensor::{Device, Tensor};
use std::fmt;
use std::str::FromStr;

/// The pure-Rust flex CPU device: the host for float64 work and the default compute device.
pub fn cpu() -> Device {
    Device::flex()
}

/// Whether `device` is the flex CPU device (the one diffuse's CPU kernels run on).
pub fn is_cpu(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        burn::backend::DispatchDevice::Flex(_)
    )
}

/// Which wgpu adapter: the platform's default, or the N-th of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgpuAdapter {
    /// The adapter wgpu picks (the only one on a machine with one GPU or only lavapipe).
    Default,
    /// The N-th discrete GPU (`wgpu:N`).
    Discrete(usize),
    /// The N-th integrated GPU (`wgpu:integrated:N`).
    Integrated(usize),
    /// A software adapter such as Mesa's lavapipe (`wgpu:cpu`).
    Software,
}

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Wgpu(WgpuAdapter),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "device",
                format!(
                    "`{s}`: expected cpu, cuda, cuda:N, wgpu, wgpu:N, wgpu:integrated[:N] \
                 or wgpu:cpu"
                ),
            )
        };
        let index = |v: &str| v.parse::<usize>().map_err(|_| bad());
        let parts: Vec<&str> = s.trim().split(':').collect();
        Ok(match parts.as_slice() {
            ["cpu"] => DeviceSpec::Cpu,
            ["cuda"] => DeviceSpec::Cuda(0),
            ["cuda", n] => DeviceSpec::Cuda(index(n)?),
            ["wgpu"] => DeviceSpec::Wgpu(WgpuAdapter::Default),
            ["wgpu", "cpu"] => DeviceSpec::Wgpu(WgpuAdapter::Software),
            ["wgpu", "integrated"] => DeviceSpec::Wgpu(WgpuAdapter::Integrated(0)),
            ["wgpu", "integrated", n] => DeviceSpec::Wgpu(WgpuAdapter::Integrated(index(n)?)),
            ["wgpu", n] => DeviceSpec::Wgpu(WgpuAdapter::Discrete(index(n)?)),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Wgpu(WgpuAdapter::Default) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(WgpuAdapter::Discrete(n)) => write!(f, "wgpu:{n}"),
            DeviceSpec::Wgpu(WgpuAdapter::Integrated(n)) => write!(f, "wgpu:integrated:{n}"),
            DeviceSpec::Wgpu(WgpuAdapter::Software) => write!(f, "wgpu:cpu"),
        }
    }
}

impl DeviceSpec {
    /// The burn device, checked to work: a GPU backend that is not compiled in, or whose
    /// device cannot be opened (no driver, no adapter), is an error naming the device instead
    /// of a panic deep inside the runtime at the first tensor.
    pub fn open(&self) -> Result<Device> {
        let device = self.device()?;
        if !matches!(self, DeviceSpec::Cpu) {
            probe(&device).map_err(|why| {
                Error::config("device", format!("`{self}` could not be opened: {why}"))
            })?;
        }
        Ok(device)
    }

    fn device(&self) -> Result<Device> {
        let missing = |feature: &str| {
            Error::config(
                "device",
                format!(
                    "`{self}` needs a build with `--features {feature}` (this binary has \
                 only the CPU)"
                ),
            )
        };
        match *self {
            DeviceSpec::Cpu => Ok(cpu()),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(n) => Ok(Device::cuda(n)),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(missing("cuda")),
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu(adapter) => {
                use burn::tensor::DeviceKind;
                Ok(Device::wgpu(match adapter {
                    WgpuAdapter::Default => DeviceKind::DefaultDevice,
                    WgpuAdapter::Discrete(n) => DeviceKind::DiscreteGpu(n),
                    WgpuAdapter::Integrated(n) => DeviceKind::IntegratedGpu(n),
                    WgpuAdapter::Software => DeviceKind::Cpu,
                }))
            }
            #[cfg(not(feature = "wgpu"))]
            DeviceSpec::Wgpu(_) => Err(missing("wgpu")),
        }
    }
}

/// Runs one tiny op on `device` and reads it back; a runtime that cannot start panics inside
/// burn, often on its own server thread (this thread then only sees a closed channel), so the
/// first panic message of any thread during the probe is the reason given.
fn probe(device: &Device) -> std::result::Result<(), String> {
    use std::sync::{Arc, Mutex};
    let device = device.clone();
    let first_panic: Arc<Mutex<Option<String>>> = Arc::default();
    let hook = std::panic::take_hook();
    let record = first_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut slot) = record.lock() {
            slot.get_or_insert_with(|| panic_message(info.payload()));
        }
    }));
    let outcome = std::panic::catch_unwind(move || {
        let x = Tensor::<1>::from_floats([1.0, 2.0], &device);
        x.sum().into_data().try_to_vec::<f32>().map(|v| v[0])
    });
    std::panic::set_hook(hook);
    let first = first_panic.lock().ok().and_then(|m| m.clone());
    match outcome {
        Ok(Ok(3.0)) => Ok(()),
        Ok(Ok(v)) => Err(format!("1 + 2 gave {v}")),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(panic) => Err(first.unwrap_or_else(|| panic_message(&*panic))),
    }
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the runtime panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_errors() {
        for name in [
            "cpu",
            "cuda:0",
            "cuda:3",
            "wgpu",
            "wgpu:1",
            "wgpu:integrated:0",
            "wgpu:cpu",
        ] {
            let spec: DeviceSpec = name.parse().unwrap();
            assert_eq!(spec.to_string(), name);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        for bad in ["gpu", "cuda:x", "cuda:0:1", "wgpu:-1", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("expected cpu"), "{bad}: {e}");
        }
    }

    #[test]
    fn cpu_is_flex_and_opens() {
        let d = DeviceSpec::Cpu.open().unwrap();
        assert!(is_cpu(&d));
        assert!(is_cpu(&d.autodiff()));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_compiled_in_is_a_clear_error() {
        let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
