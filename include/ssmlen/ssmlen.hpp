// SPDX-License-Identifier: Apache-2.0
//! @file ssmlen.hpp
//! The umbrella header: everything that compiles with a host C++20 compiler.
//! CUDA code lives in `cuda/` folders (.cuh) and is included explicitly from .cu files.
#pragma once

#include <ssmlen/agent/episode.hpp>
#include <ssmlen/agent/rollout.hpp>
#include <ssmlen/backends/host.hpp>
#include <ssmlen/config.hpp>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/math.hpp>
#include <ssmlen/core/reduce.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/core/tensor.hpp>
#include <ssmlen/eval/length_sweep.hpp>
#include <ssmlen/eval/report.hpp>
#include <ssmlen/io/safetensors.hpp>
#include <ssmlen/layers/attention.hpp>
#include <ssmlen/layers/conv1d.hpp>
#include <ssmlen/layers/embedding.hpp>
#include <ssmlen/layers/gru.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/layers/lstm.hpp>
#include <ssmlen/layers/mamba_block.hpp>
#include <ssmlen/layers/mlp.hpp>
#include <ssmlen/layers/param.hpp>
#include <ssmlen/layers/recurrent.hpp>
#include <ssmlen/layers/rmsnorm.hpp>
#include <ssmlen/layers/selective_ssm.hpp>
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/models/config_json.hpp>
#include <ssmlen/models/lookup_learner.hpp>
#include <ssmlen/models/mamba_config.hpp>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/models/recurrent_lm.hpp>
#include <ssmlen/models/transformer_lm.hpp>
#include <ssmlen/ops/cross_entropy.hpp>
#include <ssmlen/ops/elementwise.hpp>
#include <ssmlen/ops/gemm.hpp>
#include <ssmlen/scan/policy.hpp>
#include <ssmlen/scan/selective_scan.hpp>
#include <ssmlen/tasks/registry.hpp>
#include <ssmlen/tasks/task_env.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/tool.hpp>
#include <ssmlen/train/adamw.hpp>
#include <ssmlen/train/batch.hpp>
#include <ssmlen/train/checkpoint.hpp>
#include <ssmlen/train/presets.hpp>
#include <ssmlen/train/run.hpp>
#include <ssmlen/train/schedule.hpp>
#include <ssmlen/train/task_batches.hpp>
#include <ssmlen/train/trainer.hpp>
