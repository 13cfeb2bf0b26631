// Demo-site helpers (not part of the tracker): the live stats panel shown on every page.
// The tracker loads async, so everything here tolerates `window.evothesis` not existing yet.
(function () {
  'use strict';

  function render() {
    var out = document.getElementById('evo-stats');
    if (!out) return;
    if (!window.evothesis) {
      out.textContent = 'tracker not loaded yet…';
      return;
    }
    out.textContent = JSON.stringify(window.evothesis.getStats(), null, 2);
  }

  document.addEventListener('DOMContentLoaded', function () {
    var flush = document.getElementById('evo-flush');
    if (flush) {
      flush.addEventListener('click', function () {
        if (window.evothesis) window.evothesis.flush();
      });
    }
    render();
    setInterval(render, 500);
  });
})();
