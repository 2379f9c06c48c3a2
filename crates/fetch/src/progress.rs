//! A progress bar for a fetch.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for `len` requests, drawn on standard error: elapsed time,
/// a bar, done/total, rate and the time left.
///
/// Pass it to [`fetch_all`](crate::fetch_all), which advances it by one as each
/// request finishes, whatever its outcome; finish or clear it afterwards. Whether
/// to show one at all (for example, only when the output is a terminal) is the
/// caller's choice.
///
/// ```
/// let bar = fanout_fetch::progress_bar(3);
/// assert_eq!(bar.length(), Some(3));
/// bar.finish_and_clear();
/// ```
pub fn progress_bar(len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} ({per_sec}, {eta} left)",
    )
    .map(|style| style.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len).with_style(style)
}
