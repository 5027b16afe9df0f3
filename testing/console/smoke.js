// Runs the web console's script (crates/control/src/console.html) against a live API with a
// minimal DOM and checks what it renders: the summary, the nodes and volumes tables, the failed
// replicas (none on the demo), the I/O table, and no error. Usage: node smoke.js <console.html> <api-url> <token>
"use strict";
const fs = require("fs");
const [html, api, token] = process.argv.slice(2);
const page = fs.readFileSync(html, "utf8");
const script = page.slice(page.indexOf("<script>") + 8, page.indexOf("</script>"));
const els = {};
global.document = {
  getElementById: (id) =>
    (els[id] = els[id] || { innerHTML: "", textContent: "", value: "", addEventListener() {} }),
};
global.localStorage = { getItem: () => token, setItem() {} };
const realFetch = fetch;
global.fetch = (path, opts) => realFetch(api + path, opts);
global.setInterval = () => {};
new Function(script)();
setTimeout(() => {
  const text = (id) => els[id] && (els[id].innerHTML || els[id].textContent);
  const want = [
    ["summary", "leader<b>node-"],
    ["nodes", "<td>node-1</td>"],
    ["volumes", "<td>demo</td>"],
    ["failures", "<td>none</td>"],
    ["io", "<b>cache</b>"],
  ];
  let failed = false;
  if (text("error")) {
    console.error("console error:", text("error"));
    failed = true;
  }
  for (const [id, needle] of want) {
    if (!(text(id) || "").includes(needle)) {
      console.error(`console: #${id} lacks ${needle}: ${text(id)}`);
      failed = true;
    }
  }
  console.log(failed ? "console: FAILED" : "console: rendered summary, nodes, volumes, failed replicas, I/O");
  process.exit(failed ? 1 : 0);
}, 2000);
