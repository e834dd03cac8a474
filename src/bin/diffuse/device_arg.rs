//! `--device`, shared by train, sample, eval and bench.

use diffuse::device::DeviceSpec;

#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArg {
    /// Where the networks run: cpu | cuda[:N] | wgpu[:N] | wgpu:integrated[:N] | wgpu:cpu
    /// (GPU backends need a build with `--features cuda` / `--features wgpu`). float64 work
    /// (schedules, x_t and targets) stays on the CPU.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceSpec,
}

pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: diffuse::Error| e.to_string())
}

impl DeviceArg {
    /// The opened device (an error naming it when it cannot run).
    pub fn open(&self) -> anyhow::Result<burn::tensor::Device> {
        Ok(self.device.open()?)
    }
}

/// The devices of `--devices cuda:0,cuda:1`, opened: data-parallel training is for several
/// GPUs; on the CPU one process already uses every core through its thread pool.
pub fn open_data_parallel(specs: &[DeviceSpec]) -> anyhow::Result<Vec<burn::tensor::Device>> {
    if specs.len() < 2 {
        anyhow::bail!("--devices takes two or more GPUs (for one, use --device)");
    }
    if specs.contains(&DeviceSpec::Cpu) {
        anyhow::bail!(
            "--devices: data-parallel training runs on GPUs; on the CPU one process already \
             uses every core (train with --device cpu, threads from RAYON_NUM_THREADS)"
        );
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].contains(s) {
            anyhow::bail!("--devices names {s} twice");
        }
    }
    specs.iter().map(|s| Ok(s.open()?)).collect()
}

/// `trainer` on the devices `diffuse train` was given: `--devices` (data parallel) or
/// `--device`.
pub fn place(
    trainer: diffuse::train::Trainer,
    args: &crate::train::Args,
) -> anyhow::Result<diffuse::train::Trainer> {
    Ok(if args.devices.is_empty() {
        trainer.on_device(args.device.open()?)?
    } else {
        trainer.on_devices(&open_data_parallel(&args.devices)?)?
    })
}
