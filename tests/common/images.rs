//! A small UNet image run on the committed Fashion-MNIST slice, shared by the image tests.
#![allow(dead_code)] // Each test file uses what it needs.

use diffuse::data::DataSpec;
use diffuse::nn::unet::config::{DownBlockType, UpBlockType};
use diffuse::nn::unet::SampleSize;
use diffuse::nn::{ModelConfig, UNet2DConfig};
use diffuse::prediction::PredictionType;
use diffuse::schedule::ScheduleConfig;
use diffuse::train::{RunConfig, TrainConfig};
use std::path::{Path, PathBuf};

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion-mnist")
}

/// A two-level UNet (8, 16 channels, attention at 14x14) for 1x28x28 images.
pub fn tiny_unet(classes: Option<usize>, out_channels: usize) -> UNet2DConfig {
    UNet2DConfig {
        sample_size: Some(SampleSize::Square(28)),
        in_channels: 1,
        out_channels,
        down_block_types: vec![DownBlockType::DownBlock2D, DownBlockType::AttnDownBlock2D],
        up_block_types: vec![UpBlockType::AttnUpBlock2D, UpBlockType::UpBlock2D],
        block_out_channels: vec![8, 16],
        layers_per_block: 1,
        norm_num_groups: 4,
        attention_head_dim: Some(8),
        num_class_embeds: classes.map(|k| k + 1),
        ..UNet2DConfig::default()
    }
}

pub fn image_run(data: DataSpec, model: UNet2DConfig, steps: u64, batch: usize) -> RunConfig {
    RunConfig {
        model: ModelConfig::Unet(model),
        schedule: ScheduleConfig {
            num_train_timesteps: 100,
            ..ScheduleConfig::default()
        },
        prediction: PredictionType::Eps,
        data,
        train: TrainConfig {
            steps,
            batch_size: batch,
            lr: 2e-3,
            warmup_steps: 2,
            ema_decay: 0.9,
            checkpoint_every: 0,
            ..TrainConfig::default()
        },
        seed: 11,
        sde: None,
    }
}

pub fn fixture_data(hflip: bool) -> DataSpec {
    let mut spec = DataSpec::from_arg(fixture().to_str().unwrap()).unwrap();
    if let DataSpec::Images { hflip: h, .. } = &mut spec {
        *h = hflip;
    }
    spec
}
