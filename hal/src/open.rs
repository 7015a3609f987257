//! Opening the configured sources.

use gantry_config::edge::{CameraSource, DepthSource};
use gantry_config::EdgeConfig;

use crate::source::{FrameSource, HalError, Pacing};
use std::sync::Arc;

use crate::synthetic::{ArmPose, Scene, SyntheticCamera, SyntheticDepth};

/// The RGB source `camera.source` names.
pub fn open_camera(config: &EdgeConfig, pacing: Pacing) -> Result<Box<dyn FrameSource>, HalError> {
    let c = &config.camera;
    match c.source {
        CameraSource::Synthetic => {
            Ok(Box::new(SyntheticCamera::new(Scene::from_config(config), c.width, c.height, c.fps, pacing)))
        }
        #[cfg(feature = "v4l")]
        CameraSource::V4l => Ok(Box::new(crate::v4l::V4lCamera::open(&c.device, c.width, c.height, c.fps)?)),
        #[cfg(not(feature = "v4l"))]
        CameraSource::V4l => Err(HalError::NotBuilt { source_name: "v4l", feature: "v4l" }),
        #[cfg(feature = "realsense")]
        CameraSource::Realsense => Ok(Box::new(crate::realsense::RealSense::open(config)?.color())),
        #[cfg(not(feature = "realsense"))]
        CameraSource::Realsense => Err(HalError::NotBuilt { source_name: "realsense", feature: "realsense" }),
        CameraSource::Replay => {
            let path = std::path::Path::new(&c.replay_path);
            Ok(Box::new(crate::replay::ReplaySource::open(path, crate::replay::Stream::Rgb, pacing)?))
        }
    }
}

/// The depth source `depth.source` names; `None` for `"none"`. A synthetic
/// depth camera draws the arm at the angles `arm` holds, when given.
pub fn open_depth(
    config: &EdgeConfig,
    pacing: Pacing,
    arm: Option<&Arc<ArmPose>>,
) -> Result<Option<Box<dyn FrameSource>>, HalError> {
    let d = &config.depth;
    match d.source {
        DepthSource::None => Ok(None),
        DepthSource::Synthetic => Ok(Some(Box::new(SyntheticDepth::new(
            match arm {
                Some(pose) => Scene::from_config(config).with_arm(config, pose.clone()),
                None => Scene::from_config(config),
            },
            d.width,
            d.height,
            d.fps,
            pacing,
        )))),
        #[cfg(feature = "realsense")]
        DepthSource::Realsense => Ok(Some(Box::new(crate::realsense::RealSense::open(config)?.depth()))),
        #[cfg(not(feature = "realsense"))]
        DepthSource::Realsense => Err(HalError::NotBuilt { source_name: "realsense", feature: "realsense" }),
        DepthSource::Replay => {
            let path = std::path::Path::new(&config.camera.replay_path);
            Ok(Some(Box::new(crate::replay::ReplaySource::open(path, crate::replay::Stream::Depth, pacing)?)))
        }
    }
}

/// The colour source and, when configured, the depth source.
pub type Sources = (Box<dyn FrameSource>, Option<Box<dyn FrameSource>>);

/// Both sources the configuration names. When both are the RealSense, one
/// device pipeline serves both halves: a second pipeline on the same device
/// would fail busy. `arm`: see [`open_depth`].
pub fn open_sources(config: &EdgeConfig, pacing: Pacing, arm: Option<&Arc<ArmPose>>) -> Result<Sources, HalError> {
    #[cfg(feature = "realsense")]
    if config.camera.source == CameraSource::Realsense && config.depth.source == DepthSource::Realsense {
        let device = crate::realsense::RealSense::open(config)?;
        return Ok((Box::new(device.color()), Some(Box::new(device.depth()))));
    }
    Ok((open_camera(config, pacing)?, open_depth(config, pacing, arm)?))
}
