//! Preprocessing and inference, per backend and model, on synthetic frames.
//!
//! `cargo bench -p gantry-bench --bench inference` (add `--features ort` with
//! `ORT_DYLIB_PATH` set for the ONNX Runtime rows). Criterion reports the median;
//! the p50/p99 table at the end comes from a separate run of each case.

use criterion::{criterion_group, Criterion};
use gantry_bench::{model_dir, percentiles, synthetic_frames};
use gantry_policy::infer::tract::TractBackend;
use gantry_policy::infer::PolicyBackend;
use gantry_policy::model::ModelPackage;
use gantry_policy::preprocess::Preprocessor;

const MODELS: [&str; 2] = ["baseline", "vision-50m"];

fn backends(model: &ModelPackage) -> Vec<(&'static str, Box<dyn PolicyBackend>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    let out: Vec<(&'static str, Box<dyn PolicyBackend>)> =
        vec![("tract", Box::new(TractBackend::load(model, threads).expect("tract loads")))];
    #[cfg(feature = "ort")]
    let out = {
        let mut out = out;
        let policy = gantry_config::edge::Policy {
            providers: vec![gantry_config::edge::ExecutionProvider::Cpu],
            threads,
            ..Default::default()
        };
        match gantry_policy::infer::ort::OrtBackend::load(model, &policy) {
            Ok((b, _)) => out.push(("ort-cpu", Box::new(b))),
            Err(e) => eprintln!("ort skipped: {e}"),
        }
        out
    };
    out
}

fn bench(c: &mut Criterion) {
    let (rgb, depth) = synthetic_frames();
    let mut table = Vec::new();
    for name in MODELS {
        let Some(dir) = model_dir(name) else {
            eprintln!("{name}: not generated (python3 models/make_models.py {name} models/{name}); skipped");
            continue;
        };
        let model = ModelPackage::load(&dir).expect("model package");
        let mut pre = Preprocessor::new(&model, (1920, 1080), (848, 480)).expect("preprocessor");
        let mut group = c.benchmark_group(name);
        group.sample_size(if name == "baseline" { 100 } else { 20 });
        for (backend_name, mut backend) in backends(&model) {
            group.bench_function(format!("preprocess+{backend_name}"), |b| {
                b.iter(|| {
                    let inputs = backend.inputs();
                    pre.rgb(&rgb, inputs.rgb).unwrap();
                    pre.depth(&depth, 1.0, inputs.depth).unwrap();
                    backend.run().unwrap()[0]
                })
            });
            group.bench_function(format!("infer-{backend_name}"), |b| b.iter(|| backend.run().unwrap()[0]));
            let n = if name == "baseline" { 1000 } else { 200 };
            let infer = percentiles(n, || {
                backend.run().unwrap();
            });
            table.push((name, format!("infer {backend_name}"), infer));
        }
        let (h, w) = model.io_shape().expect("io shape").rgb;
        let mut rgb_tensor = vec![0f32; 3 * h * w];
        let p = percentiles(500, || pre.rgb(&rgb, &mut rgb_tensor).unwrap());
        table.push((name, "preprocess rgb 1080p (cpu)".into(), p));
        group.finish();
    }
    println!("\n| model | step | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |");
    for (model, step, p) in table {
        println!("| {model} | {step} | {:.3} | {:.3} | {:.3} |", p.p50_ms, p.p99_ms, p.max_ms);
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
