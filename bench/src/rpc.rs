//! A bare JSON-RPC client: single calls (anvil's own methods included) and batches.

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Rpc {
    url: String,
    client: reqwest::Client,
}

impl Rpc {
    pub fn new(url: &str) -> Rpc {
        Rpc { url: url.to_owned(), client: reqwest::Client::new() }
    }

    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response: Value = self.client.post(&self.url).json(&body).send().await?.json().await?;
        if let Some(error) = response.get("error") {
            bail!("{method}: {error}");
        }
        Ok(response["result"].clone())
    }

    /// One HTTP request carrying `calls`; the results in the calls' order. Any error fails it.
    pub async fn batch(&self, calls: &[(&str, Value)]) -> anyhow::Result<Vec<Value>> {
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(id, (method, params))| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .collect();
        let response: Value = self.client.post(&self.url).json(&body).send().await?.json().await?;
        let answers = response.as_array().context("a batch answer is an array")?;
        let mut results = vec![Value::Null; calls.len()];
        for answer in answers {
            let id = answer["id"].as_u64().context("a batch answer has its id")? as usize;
            if let Some(error) = answer.get("error") {
                bail!("{} (call {id} of the batch): {error}", calls.get(id).map(|c| c.0).unwrap_or("?"));
            }
            *results.get_mut(id).context("a batch answer's id is one of ours")? = answer["result"].clone();
        }
        Ok(results)
    }

    /// The raw body of one call, unparsed (the limit client reads logs this way and discards them).
    pub async fn call_raw(&self, method: &str, params: Value) -> anyhow::Result<bytes_like::Body> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = self.client.post(&self.url).json(&body).send().await?.error_for_status()?;
        Ok(bytes_like::Body(response.bytes().await?.to_vec()))
    }

    /// The raw body of one batch of `calls`, unparsed (the limit clients read blocks this way).
    pub async fn batch_raw(&self, calls: &[(&str, Value)]) -> anyhow::Result<bytes_like::Body> {
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(id, (method, params))| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .collect();
        let response = self.client.post(&self.url).json(&body).send().await?.error_for_status()?;
        Ok(bytes_like::Body(response.bytes().await?.to_vec()))
    }

    pub async fn block_number(&self) -> anyhow::Result<u64> {
        hex_u64(&self.call("eth_blockNumber", json!([])).await?)
    }
}

pub mod bytes_like {
    /// A response body as bytes.
    pub struct Body(pub Vec<u8>);

    impl Body {
        /// How many times `needle` occurs (counting log objects by a key each carries once).
        pub fn count(&self, needle: &[u8]) -> usize {
            self.0.windows(needle.len()).filter(|w| *w == needle).count()
        }

        /// Whether the answer is a JSON-RPC error.
        pub fn is_error(&self) -> bool {
            // A success starts `{"jsonrpc":"2.0","id":1,"result":`; an error names itself up front.
            let head = &self.0[..self.0.len().min(64)];
            head.windows(7).any(|w| w == b"\"error\"")
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0[..self.0.len().min(500)]).into_owned()
        }
    }
}

pub fn hex_u64(value: &Value) -> anyhow::Result<u64> {
    let text = value.as_str().context("a hex quantity")?;
    Ok(u64::from_str_radix(text.trim_start_matches("0x"), 16)?)
}

pub fn quantity(n: u64) -> String {
    format!("0x{n:x}")
}
