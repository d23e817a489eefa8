"""Manager pages: project settings, members, imports, the task browser and the item review page."""

from django.urls import path

from arpad.http import no_store
from frontend import views_manage

urlpatterns = [
    path("projects/new/", views_manage.project_create, name="project-create"),
    path("projects/<int:project_id>/settings/", views_manage.project_edit, name="project-edit"),
    path("projects/<int:project_id>/members/", views_manage.project_members, name="project-members"),
    path("projects/<int:project_id>/imports/", views_manage.project_imports, name="project-imports"),
    path("projects/<int:project_id>/tasks/", views_manage.task_browser, name="task-browser"),
    # The item review page shows the gold answer and every judgement: no browser cache keeps it.
    path("projects/<int:project_id>/tasks/<int:task_id>/", no_store(views_manage.item_review), name="item-review"),
]
