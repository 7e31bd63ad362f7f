"""What people read: labels, Markdown tables, prose findings and plots, from results files alone."""
