//! `wanlora bench …`: measurements on the GPU machine with random weights at the real sizes.

pub mod step;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// One expert's LoRA training step: s/step, peak memory, MFU.
    Step(step::StepArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Step(a) => step::run(a),
    }
}
