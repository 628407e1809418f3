// The console's only script: small islands on server-rendered pages, each optional (pages work without it).

// The deadline countdown: hours and minutes left, updated every 30 s.
function countdowns() {
  for (const el of document.querySelectorAll('[data-countdown]')) {
    const deadline = Date.parse(el.getAttribute('data-countdown') || '');
    if (!Number.isFinite(deadline)) continue;
    const left = Math.max(0, deadline - Date.now());
    const h = Math.floor(left / 3600000);
    const m = Math.floor((left % 3600000) / 60000);
    el.textContent = `${h} h ${m} min`;
  }
}

// "Select all shown" on the dead letters' list.
function selectAll() {
  for (const button of document.querySelectorAll('[data-select-all]')) {
    button.addEventListener('click', () => {
      const form = document.getElementById(button.getAttribute('data-select-all') || '');
      if (!form) return;
      for (const box of form.querySelectorAll('input[type=checkbox][name=id]:not(:disabled)'))
        box.checked = true;
    });
  }
}

document.addEventListener('DOMContentLoaded', () => {
  countdowns();
  setInterval(countdowns, 30000);
  selectAll();
});
