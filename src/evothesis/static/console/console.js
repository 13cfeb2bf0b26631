// The console's entry point: loads the script of the page the server rendered and hands
// it the page's container. Every page builds its content from the JSON endpoints.

import { context } from "./api.js";
import { clear, el } from "./dom.js";

const PAGES = new Set(["clients", "client", "domains", "install", "live", "pipeline", "usage", "requests"]);

async function start() {
  const root = document.getElementById("page");
  if (!root || !PAGES.has(context.page)) return;
  try {
    const page = await import(`./page-${context.page}.js`);
    await page.render(root, context);
  } catch (error) {
    clear(root).append(
      el("p", { class: "message error", role: "alert" }, `This page could not be shown: ${error.message}`),
    );
  } finally {
    root.setAttribute("aria-busy", "false");
  }
}

start();
