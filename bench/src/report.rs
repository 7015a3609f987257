//! The benchmark report: figures with units and, where one exists, the same
//! figure measured on a peer, printed as Markdown and written as JSON in the
//! contract's format.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub peer: Option<String>,
    pub peer_value: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn add(&mut self, name: impl Into<String>, value: f64, unit: &str) {
        self.figures.push(Figure { name: name.into(), value, unit: unit.into(), peer: None, peer_value: None });
    }

    /// A figure beside the same figure measured on `peer`.
    pub fn add_with_peer(&mut self, name: impl Into<String>, value: f64, unit: &str, peer: &str, peer_value: f64) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            peer: Some(peer.into()),
            peer_value: Some(peer_value),
        });
    }

    pub fn markdown(&self) -> String {
        let mut out =
            String::from("| figure | value | unit | peer | peer value |\n| --- | ---: | --- | --- | ---: |\n");
        for f in &self.figures {
            let peer = f.peer.as_deref().unwrap_or("–");
            let peer_value = f.peer_value.map_or("–".to_owned(), |v| format!("{v:.3}"));
            out.push_str(&format!("| {} | {:.3} | {} | {peer} | {peer_value} |\n", f.name, f.value, f.unit));
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("figures serialise")
    }
}
