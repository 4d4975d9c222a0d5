//! `wanlora dataset inspect`: what a job's datasets hold, before a ten-hour run — items per
//! bucket and frame count, resolved captions, and every problem.

use crate::bucket::BucketKey;
use crate::caption::CaptionSource;
use crate::catalog::{problem_from_media_error, Catalog, Flip};
use crate::problems::{shown_path, summarise, Problem};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

/// One resolved dataset in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetRow {
    pub index: usize,
    pub spec_index: usize,
    pub folder: PathBuf,
    pub resolution: u32,
    pub batch_size: usize,
    pub is_reg: bool,
    pub files: usize,
    pub items: usize,
    /// Items per epoch, counting `num_repeats`.
    pub items_per_epoch: usize,
}

/// Items of one dataset in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketRow {
    pub dataset: usize,
    pub bucket: BucketKey,
    pub items: usize,
}

/// One resolved caption.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptionRow {
    pub dataset: usize,
    pub path: PathBuf,
    pub caption: String,
    pub source: CaptionSource,
}

/// How many files took their caption from where.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct CaptionSourceCounts {
    pub own_file: usize,
    pub folder_default: usize,
    pub default_caption: usize,
    pub missing: usize,
}

/// The whole report; `Display` prints it for the terminal, `Serialize` gives it to the web UI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectReport {
    pub datasets: Vec<DatasetRow>,
    pub buckets: Vec<BucketRow>,
    pub captions: Vec<CaptionRow>,
    /// Files with a caption, beyond those listed in `captions`.
    pub captions_not_shown: usize,
    pub caption_sources: CaptionSourceCounts,
    pub flips: Vec<Flip>,
    pub problems: Vec<Problem>,
}

/// Builds the report; `captions_shown` limits the caption list (files, not flip/resolution
/// copies).
pub fn inspect(catalog: &Catalog, captions_shown: usize) -> InspectReport {
    let mut datasets = Vec::new();
    for (index, d) in catalog.datasets.iter().enumerate() {
        let members: Vec<_> = catalog
            .usable_items()
            .filter(|i| i.dataset == index)
            .collect();
        let files: BTreeSet<&PathBuf> = members.iter().map(|i| &i.path).collect();
        datasets.push(DatasetRow {
            index,
            spec_index: d.spec_index,
            folder: d.folder.clone(),
            resolution: d.resolution,
            batch_size: d.batch_size,
            is_reg: d.is_reg,
            files: files.len(),
            items: members.len(),
            items_per_epoch: members.iter().map(|i| i.num_repeats).sum(),
        });
    }
    let mut per_bucket: BTreeMap<(usize, BucketKey), usize> = BTreeMap::new();
    for item in catalog.usable_items() {
        *per_bucket.entry((item.dataset, item.bucket)).or_default() += 1;
    }
    let buckets = per_bucket
        .into_iter()
        .map(|((dataset, bucket), items)| BucketRow {
            dataset,
            bucket,
            items,
        })
        .collect();

    let mut seen = BTreeSet::new();
    let mut all_captions = Vec::new();
    let mut caption_sources = CaptionSourceCounts::default();
    for item in catalog.usable_items() {
        if !seen.insert((item.path.clone(), item.caption.clone())) {
            continue;
        }
        match item.caption_source {
            CaptionSource::OwnFile(_) => caption_sources.own_file += 1,
            CaptionSource::FolderDefault(_) => caption_sources.folder_default += 1,
            CaptionSource::DefaultCaption => caption_sources.default_caption += 1,
            CaptionSource::Missing => caption_sources.missing += 1,
        }
        all_captions.push(CaptionRow {
            dataset: item.dataset,
            path: item.path.clone(),
            caption: item.caption.clone(),
            source: item.caption_source.clone(),
        });
    }
    let captions_not_shown = all_captions.len().saturating_sub(captions_shown);
    all_captions.truncate(captions_shown);
    let flips: BTreeSet<(bool, bool)> = catalog
        .usable_items()
        .map(|i| (i.flip.x, i.flip.y))
        .collect();
    InspectReport {
        datasets,
        buckets,
        captions: all_captions,
        captions_not_shown,
        caption_sources,
        flips: flips.into_iter().map(|(x, y)| Flip { x, y }).collect(),
        problems: catalog.problems.clone(),
    }
}

/// Decodes one item of every file, so that files which probe well but do not decode (truncated
/// data) are found before training rather than during it. Failing files are excluded from the
/// catalog; the problems found are returned (and added to the catalog's).
pub fn check_decoding(catalog: &mut Catalog, progress: bool) -> Vec<Problem> {
    let mut firsts = Vec::new();
    let mut seen = BTreeSet::new();
    for item in catalog.usable_items() {
        if seen.insert(item.path.clone()) {
            firsts.push(item.id);
        }
    }
    let bar = if progress {
        indicatif::ProgressBar::new(firsts.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut found = Vec::new();
    for id in firsts {
        let item = &catalog.items[id];
        match catalog.load_frames(item) {
            Ok(loaded) => found.extend(loaded.problems),
            Err(err) => found.push(problem_from_media_error(&item.path, &err)),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    for problem in &found {
        if problem.kind.skips_item() {
            catalog.exclude_file(&problem.path, problem.clone());
        } else if !catalog.problems.contains(problem) {
            catalog.problems.push(problem.clone());
        }
    }
    found
}

fn source_label(source: &CaptionSource) -> String {
    match source {
        CaptionSource::OwnFile(_) => "caption file".into(),
        CaptionSource::FolderDefault(path) => {
            format!("{}", path.file_name().unwrap_or_default().to_string_lossy())
        }
        CaptionSource::DefaultCaption => "default_caption".into(),
        CaptionSource::Missing => "no caption".into(),
    }
}

impl std::fmt::Display for InspectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        writeln!(out, "Datasets")?;
        for d in &self.datasets {
            writeln!(
                out,
                "  [{}] {} at {}²{}: {} file(s), {} item(s), {} per epoch, batch size {}",
                d.index,
                shown_path(&d.folder),
                d.resolution,
                if d.is_reg { " (regularisation)" } else { "" },
                d.files,
                d.items,
                d.items_per_epoch,
                d.batch_size
            )?;
        }
        if self.flips.iter().any(|f| f.x || f.y) {
            let names: Vec<String> = self.flips.iter().map(Flip::to_string).collect();
            writeln!(out, "  flip variants: {}", names.join(", "))?;
        }
        writeln!(out, "\nBuckets (width x height x frames)")?;
        for b in &self.buckets {
            writeln!(
                out,
                "  [{}] {:<16} {:>5} item(s)",
                b.dataset,
                b.bucket.to_string(),
                b.items
            )?;
        }
        let s = &self.caption_sources;
        writeln!(
            out,
            "\nCaptions: {} from caption files, {} from default.txt, {} from default_caption, {} missing",
            s.own_file, s.folder_default, s.default_caption, s.missing
        )?;
        for c in &self.captions {
            let folder = self.datasets.get(c.dataset).map(|d| d.folder.as_path());
            let shown = folder
                .and_then(|f| c.path.strip_prefix(f).ok())
                .unwrap_or(&c.path);
            writeln!(
                out,
                "  [{}] {} ({}): {:?}",
                c.dataset,
                shown_path(shown),
                source_label(&c.source),
                c.caption
            )?;
        }
        if self.captions_not_shown > 0 {
            writeln!(out, "  … and {} more", self.captions_not_shown)?;
        }
        writeln!(out, "\nProblems: {}", summarise(&self.problems).trim_end())?;
        f.write_str(&out)
    }
}
