//! The table a fault suite ends with: one markdown row per fault, ready for a release note.
//! A suite that fails still prints the rows it got through, and names the fault it failed on.

use std::time::Duration;

use crate::rig::Checked;

/// One fault's figures.
pub struct Row {
    pub fault: String,
    pub down: Duration,
    pub converged: Duration,
    pub checked: Checked,
    pub note: String,
}

/// The rows so far, and the fault under way.
pub struct Table {
    title: String,
    rows: Vec<Row>,
    current: Option<String>,
}

impl Table {
    pub fn new(title: &str) -> Self {
        Self { title: title.to_owned(), rows: Vec::new(), current: None }
    }

    /// Marks `fault` as under way: named as the failure if the suite panics before its row.
    pub fn begin(&mut self, fault: &str) {
        self.current = Some(fault.to_owned());
    }

    pub fn push(&mut self, row: Row) {
        self.current = None;
        self.rows.push(row);
    }

    /// `fault 1.23s, ...`: the convergence of each fault, for the suite's last report line.
    pub fn summary(&self) -> String {
        let parts: Vec<String> =
            self.rows.iter().map(|r| format!("{} {:.2}s", r.fault, r.converged.as_secs_f64())).collect();
        parts.join(", ")
    }

    pub fn print(&self) {
        eprintln!("{}", self.render());
    }

    fn render(&self) -> String {
        let mut out = format!("\n{}\n\n", self.title);
        out.push_str(
            "| fault | down | acknowledged | lost | duplicated | oversold | converged after recovery | \
             settled after load stop | notes |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for r in &self.rows {
            let c = &r.checked;
            out.push_str(&format!(
                "| {} | {:.1} s | {} | {} | {} | {} | {:.2} s | {:.2} s | {} |\n",
                r.fault,
                r.down.as_secs_f64(),
                c.acked,
                c.lost,
                c.duplicated,
                c.oversold,
                r.converged.as_secs_f64(),
                c.settled.as_secs_f64(),
                r.note,
            ));
        }
        if let Some(fault) = &self.current {
            out.push_str(&format!("| {fault} | | | | | | FAILED | | see the panic message |\n"));
        }
        out
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.render());
        }
    }
}
